"""Data out of the platform, for campaign admins and ML engineers: create an
export (preference pairs in TRL's schema, or raw ratings) and download it."""
from pathlib import Path

from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import IsAdminOrEngineer, readable_campaign_or_404, readable_or_404
from annotate.errors import NotFound
from annotate.models import Export
from annotate.selectors.exports import campaign_exports
from annotate.selectors.rounds import campaign_round
from annotate.services.exports import export_create

CONTENT_TYPES = {Export.Format.JSONL: "application/jsonl", Export.Format.CSV: "text/csv"}


class ExportOutputSerializer(serializers.ModelSerializer):
    round = serializers.IntegerField(source="round.index", allow_null=True, default=None)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = [
            "id", "campaign", "round", "kind", "format", "aspect", "rows", "size_bytes", "sha256", "download_url",
            "created_by", "created_at",
        ]

    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)

    def get_download_url(self, export: Export) -> str:
        url = reverse("export-download", kwargs={"export_id": export.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request is not None else url


class ExportCreateApi(APIView):
    """Write an export now and answer with its sha256, row count and download
    URL (POST); list the campaign's exports (GET). `kind`: `preferences` (JSONL: prompt, chosen, rejected, margin, weight,
    ids), `ratings` (JSONL or CSV: every rating with round, prompt, and the
    policy version on each side) or `sft` (JSONL: accepted demonstrations as
    TRL's `messages`). `round`: that round only. `aspect` (preferences; in
    the body or the query string): the pairs from one rubric aspect's A/B
    judgments, or `combined` (the sign of the campaign's aspect_weights sum);
    left out, the overall choice. Every preference row of a campaign with
    aspects carries `aspects` ({name: 1 | -1 | 0} for the chosen answer)."""

    permission_classes = [IsAdminOrEngineer]

    class InputSerializer(serializers.Serializer):
        # Plain strings, so that the service's message (which names the
        # allowed values) is what an unknown kind or format gets.
        kind = serializers.CharField()
        format = serializers.CharField(default=Export.Format.JSONL)
        round = serializers.IntegerField(required=False, allow_null=True, min_value=0)
        aspect = serializers.CharField(
            required=False, allow_blank=True, default="",
            help_text="preferences: an aspect's name or 'combined'; empty = the overall choice",
        )

    @extend_schema(responses=ExportOutputSerializer(many=True))
    def get(self, request, campaign_id: int):
        """The campaign's exports, newest first (the latest 500)."""
        campaign = readable_campaign_or_404(request, campaign_id)
        exports = campaign_exports(campaign=campaign)[:500]
        return Response(ExportOutputSerializer(exports, many=True, context={"request": request}).data)

    @extend_schema(request=InputSerializer, responses={201: ExportOutputSerializer})
    def post(self, request, campaign_id: int):
        campaign = readable_campaign_or_404(request, campaign_id)
        body = request.data.copy() if hasattr(request.data, "copy") else dict(request.data)
        if "aspect" not in body and "aspect" in request.query_params:
            body["aspect"] = request.query_params["aspect"]
        serializer = self.InputSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        export = export_create(
            campaign=campaign,
            kind=data["kind"],
            format=data["format"],
            round_=campaign_round(campaign=campaign, index=data.get("round")),
            user=request.user,
            aspect=data["aspect"].strip(),
        )
        return Response(ExportOutputSerializer(export, context={"request": request}).data, status=status.HTTP_201_CREATED)


class ExportDownloadApi(APIView):
    """The export's file, streamed; its sha256 is in the `X-Checksum-SHA256` header."""

    permission_classes = [IsAdminOrEngineer]

    @extend_schema(
        responses={(200, content_type): OpenApiTypes.BINARY for content_type in CONTENT_TYPES.values()}
    )
    def get(self, request, export_id: int):
        export = readable_or_404(request, Export.objects.all(), export_id)
        path = Path(export.path)
        if not path.is_file():
            raise NotFound(f"Export {export.pk}'s file {path} is gone; create the export again.")
        answer = FileResponse(
            open(path, "rb"), as_attachment=True, filename=path.name, content_type=CONTENT_TYPES[export.format]
        )
        answer["X-Checksum-SHA256"] = export.sha256
        return answer

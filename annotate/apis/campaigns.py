"""What campaign admins call: create a campaign, import prompts, add annotators, start."""
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import parsers, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import IsAdminOrEngineer, IsCampaignAdmin
from annotate.errors import ValidationFailed
from annotate.models import Campaign
from annotate.services.campaigns import campaign_annotators_add, campaign_create, campaign_start
from annotate.services.prompts import prompts_import_jsonl


class CampaignOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Campaign
        fields = [
            "id", "name", "instructions", "overlap", "comparisons_per_round", "lease_ttl_seconds",
            "base_model", "training_config", "method", "auto_train", "status", "created_at",
        ]


class CampaignCreateApi(APIView):
    permission_classes = [IsCampaignAdmin]

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=200)
        base_model = serializers.CharField(max_length=500, help_text="a local path or a hub id")
        instructions = serializers.CharField(required=False, allow_blank=True, default="", max_length=50000)
        overlap = serializers.IntegerField(min_value=1, max_value=50, default=3)
        comparisons_per_round = serializers.IntegerField(min_value=1, max_value=100000, default=64)
        lease_ttl_seconds = serializers.IntegerField(min_value=30, max_value=86400, default=600)
        training_config = serializers.JSONField(required=False, default=dict)
        auto_train = serializers.BooleanField(default=True)

    @extend_schema(request=InputSerializer, responses={201: CampaignOutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = campaign_create(created_by=request.user, **serializer.validated_data)
        return Response(CampaignOutputSerializer(campaign).data, status=status.HTTP_201_CREATED)


class CampaignDetailApi(APIView):
    permission_classes = [IsAdminOrEngineer]

    @extend_schema(responses=CampaignOutputSerializer)
    def get(self, request, campaign_id: int):
        return Response(CampaignOutputSerializer(get_object_or_404(Campaign, pk=campaign_id)).data)


class JSONLinesParser(parsers.BaseParser):
    """Hands the raw bytes to the import service, which validates each line."""

    media_type = "application/x-ndjson"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read()


class JSONLParser(JSONLinesParser):
    media_type = "application/jsonl"


class PlainTextParser(JSONLinesParser):
    media_type = "text/plain"


class PromptImportApi(APIView):
    """Import prompts from JSONL: one object a line, `{"external_id", "prompt"}`
    or `{"external_id", "messages": [{"role", "content"}...]}`, optional
    `metadata`. Send the file as the body (application/x-ndjson) or as the
    multipart field `file`. Every line is checked first; one bad line imports
    nothing and the answer names each bad line. Importing again adds nothing."""

    permission_classes = [IsCampaignAdmin]
    parser_classes = [JSONLinesParser, JSONLParser, PlainTextParser, parsers.MultiPartParser]

    class OutputSerializer(serializers.Serializer):
        created = serializers.IntegerField()
        existing = serializers.IntegerField()
        lines = serializers.IntegerField()

    @extend_schema(request={"application/x-ndjson": OpenApiTypes.BINARY}, responses=OutputSerializer)
    def post(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        if isinstance(request.data, bytes):
            data = request.data
        elif "file" in request.FILES:
            data = request.FILES["file"].read()
        else:
            raise ValidationFailed("Send the JSONL as the request body (application/x-ndjson) or as the form field 'file'.")
        result = prompts_import_jsonl(campaign=campaign, data=data)
        return Response(self.OutputSerializer(result).data)


class CampaignAnnotatorsAddApi(APIView):
    permission_classes = [IsCampaignAdmin]

    class InputSerializer(serializers.Serializer):
        usernames = serializers.ListField(child=serializers.CharField(max_length=150), min_length=1, max_length=10000)

    @extend_schema(request=InputSerializer, responses=dict)
    def post(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        users = campaign_annotators_add(campaign=campaign, usernames=serializer.validated_data["usernames"])
        return Response({"added": sorted(u.username for u in users)})


class CampaignStartApi(APIView):
    """Import the base model and have it answer round 0 (runs on the gpu queue)."""

    permission_classes = [IsAdminOrEngineer]

    @extend_schema(request=None, responses={202: dict})
    def post(self, request, campaign_id: int):
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        run = campaign_start(campaign=campaign, user=request.user)
        return Response({"training_run": run.pk, "status": run.status}, status=status.HTTP_202_ACCEPTED)

"""Imported answers: a file of answers written by models outside Ratchet,
into one campaign (annotate/services/answers.py; docs/models.md)."""
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from annotate.apis.permissions import managed_campaign_or_404
from annotate.apis.uploads import ImportApi, ImportQuerySerializer, ImportResultSerializer, upload_from_request
from annotate.services.answers import answers_import


class AnswerImportModelSerializer(serializers.Serializer):
    name = serializers.CharField()
    created = serializers.IntegerField(help_text="answers of this model written (dry run: would be)")
    existing = serializers.IntegerField(help_text="answers it already had, left as they are")
    new = serializers.BooleanField(help_text="the import created this model (dry run: would)")


class AnswerImportApi(ImportApi):
    """Import answers of models outside Ratchet. JSONL, one answer a line:
    the prompt (`external_id` of one of the campaign's prompts, or `prompt`
    / `messages` creating it as the prompt import does), `model` (its name:
    the campaign's imported model of that name, created on first use; an
    endpoint's name is refused), `response`, optional `sample_index`
    (default 0) and `metadata` (an object). CSV: the same columns,
    `messages` and `metadata` as JSON. Every line is checked first; one bad
    line imports nothing and the answer names each bad line. `?dry_run=1`:
    check only, write nothing. An answer the campaign already has (same
    prompt, model and sample_index) is left as it is, so importing again
    adds nothing."""

    class OutputSerializer(ImportResultSerializer):
        prompts_created = serializers.IntegerField(help_text="prompts the lines created (dry run: would)")
        models = AnswerImportModelSerializer(many=True, help_text="each model the file names")

    @extend_schema(
        parameters=[ImportQuerySerializer],
        request={"application/x-ndjson": OpenApiTypes.BINARY, "text/csv": OpenApiTypes.BINARY},
        responses=OutputSerializer,
    )
    def post(self, request, campaign_id: int):
        campaign = managed_campaign_or_404(request, campaign_id)
        data, format, dry_run = upload_from_request(request)
        result = answers_import(campaign=campaign, data=data, format=format, dry_run=dry_run, created_by=request.user)
        return Response(self.OutputSerializer(result).data)

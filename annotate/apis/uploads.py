"""What the import APIs share: the raw file out of the request, its format,
the dry-run flag, and the API view itself (ImportApi; the prompt and gold
imports name their service).

An upload never sits in memory whole: one larger than the import limit is
refused by its Content-Length before a byte of it is read, and the body is
spooled to a temporary file past SPOOL_MEMORY_BYTES. The import services
then read it a line at a time (annotate/services/prompts.py)."""
import shutil
import tempfile
from collections.abc import Callable

from django.conf import settings
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import parsers, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.apis.permissions import IsCampaignAdmin, managed_campaign_or_404
from annotate.errors import ValidationFailed
from annotate.services.prompts import import_format


# Body bytes kept in memory before the spool moves to disk.
SPOOL_MEMORY_BYTES = 1024 * 1024
# Room for a multipart upload's boundaries and part headers around the file.
MULTIPART_SLACK_BYTES = 64 * 1024


class RawParser(parsers.BaseParser):
    """Hands the body to the import service, which validates each line, as a
    file: in memory up to SPOOL_MEMORY_BYTES, on disk past that."""

    def parse(self, stream, media_type=None, parser_context=None):
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)
        shutil.copyfileobj(stream, spool, 64 * 1024)
        spool.seek(0)
        return spool


class NDJSONParser(RawParser):
    media_type = "application/x-ndjson"


class JSONLParser(RawParser):
    media_type = "application/jsonl"


class CSVParser(RawParser):
    media_type = "text/csv"


class PlainTextParser(RawParser):
    media_type = "text/plain"


UPLOAD_PARSERS = [NDJSONParser, JSONLParser, CSVParser, PlainTextParser, parsers.MultiPartParser]


class ImportResultSerializer(serializers.Serializer):
    created = serializers.IntegerField(help_text="on a dry run: how many would be created")
    existing = serializers.IntegerField()
    lines = serializers.IntegerField()


class ImportQuerySerializer(serializers.Serializer):
    dry_run = serializers.BooleanField(default=False, help_text="check every line, write nothing")
    format = serializers.ChoiceField(
        choices=["jsonl", "csv"], required=False, help_text="default: from the content type or file name; else jsonl"
    )


def upload_check_size(request) -> None:
    """Refuse an upload over the import limit by its Content-Length, before
    reading it (Django reads no more of a body than its Content-Length)."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    limit = settings.IMPORT_MAX_BYTES
    if length > limit + MULTIPART_SLACK_BYTES:
        raise ValidationFailed(
            f"The upload is {length} bytes; the limit is {limit} (IMPORT_MAX_BYTES). Split it into parts."
        )


def upload_from_request(request):
    """(file, format, dry_run): the body (application/x-ndjson,
    application/jsonl, text/csv, text/plain) or the multipart field `file`,
    as a seekable binary file; `?format=` overrides what the content type or
    file name says."""
    query = ImportQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    upload_check_size(request)
    filename, content_type = "", request.content_type or ""
    if hasattr(request.data, "read"):
        data = request.data
    elif "file" in request.FILES:
        data = request.FILES["file"]
        filename, content_type = data.name or "", data.content_type or ""
    else:
        raise ValidationFailed(
            "Send the file as the request body (application/x-ndjson or text/csv) or as the form field 'file'."
        )
    format = import_format(format=query.validated_data.get("format"), filename=filename, content_type=content_type)
    return data, format, query.validated_data["dry_run"]


class ImportApi(APIView):
    """An upload into one campaign by one of its admins, handed to
    `importer` as a file with its format and the dry-run flag. A subclass
    sets `importer` (as a staticmethod) and says in its docstring what the
    file holds."""

    permission_classes = [IsCampaignAdmin]
    parser_classes = UPLOAD_PARSERS

    OutputSerializer = ImportResultSerializer
    # The import service: (campaign, data, format, dry_run) -> {created, existing, lines}.
    importer: Callable[..., dict]

    @extend_schema(
        parameters=[ImportQuerySerializer],
        request={"application/x-ndjson": OpenApiTypes.BINARY, "text/csv": OpenApiTypes.BINARY},
        responses=ImportResultSerializer,
    )
    def post(self, request, campaign_id: int):
        campaign = managed_campaign_or_404(request, campaign_id)
        data, format, dry_run = upload_from_request(request)
        result = self.importer(campaign=campaign, data=data, format=format, dry_run=dry_run)
        return Response(self.OutputSerializer(result).data)

"""What the import APIs share: the raw file out of the request, its format,
and the dry-run flag."""
from rest_framework import parsers, serializers

from annotate.errors import ValidationFailed
from annotate.services.prompts import import_format


class RawParser(parsers.BaseParser):
    """Hands the raw bytes to the import service, which validates each line."""

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read()


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


def upload_from_request(request) -> tuple[bytes, str, bool]:
    """(file bytes, format, dry_run): the body (application/x-ndjson,
    application/jsonl, text/csv, text/plain) or the multipart field `file`;
    `?format=` overrides what the content type or file name says."""
    query = ImportQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    filename, content_type = "", request.content_type or ""
    if isinstance(request.data, bytes):
        data = request.data
    elif "file" in request.FILES:
        upload = request.FILES["file"]
        data, filename, content_type = upload.read(), upload.name or "", upload.content_type or ""
    else:
        raise ValidationFailed(
            "Send the file as the request body (application/x-ndjson or text/csv) or as the form field 'file'."
        )
    format = import_format(format=query.validated_data.get("format"), filename=filename, content_type=content_type)
    return data, format, query.validated_data["dry_run"]

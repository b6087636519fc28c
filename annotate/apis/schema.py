from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny


class ErrorSerializer(serializers.Serializer):
    """Every 4xx (annotate/apis/errors.py): `error` a stable code
    (invalid, not_authenticated, permission_denied, not_found, conflict,
    throttled, paused, daily_limit, ...), `detail` what was wrong in words,
    and where there is more than one problem `errors` (per field, or per
    line of an import)."""

    error = serializers.CharField()
    detail = serializers.CharField()
    errors = serializers.JSONField(required=False)


# The 4xx a view declares itself (in extend_schema's responses), where its
# service can answer them; the ones every operation of a kind can answer are
# added by RatchetAutoSchema.
CONFLICT = OpenApiResponse(ErrorSerializer, description="The state does not allow it now; `detail` says why.")
TOO_MANY = OpenApiResponse(ErrorSerializer, description="Too many requests (a limit); `detail` says which.")
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No such object among those you may see.")

# Added to every operation where they apply (see RatchetAutoSchema.get_operation).
_GENERIC = {
    "400": "Invalid input: `detail` (and `errors`, per field or per line) says what was wrong; nothing was written.",
    "401": "No or bad credentials: send `Authorization: Token <key>` (POST /api/auth/token/) or log in.",
    "403": "Your role may not do this (or a session request came without its CSRF token).",
    "404": "No such object among those you may see: another campaign's ids answer 404 too, so they reveal nothing.",
}


class RatchetAutoSchema(AutoSchema):
    """Names nested Input/OutputSerializers after their view (RatingCreateApi's
    OutputSerializer -> RatingCreateOutput), so the components don't collide;
    and documents the error answers every operation can give, so that a
    client (and schemathesis, tests/annotate/test_schemathesis.py) finds
    every status it may get in the schema."""

    def _get_serializer_name(self, serializer, direction, bypass_extensions=False):
        name = super()._get_serializer_name(serializer, direction, bypass_extensions)
        outer = type(serializer).__qualname__.split(".")
        if len(outer) > 1:
            name = outer[0].removesuffix("Api") + name
        return name

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        parameters = operation.get("parameters", [])
        codes = []
        # Any write can be refused for its body or for the state it meets; a
        # read only for its query.
        if self.method != "GET" or any(p["in"] == "query" for p in parameters):
            codes.append("400")
        if any(not isinstance(p, AllowAny) for p in self.view.get_permissions()):
            codes += ["401", "403"]
        if any(p["in"] == "path" for p in parameters):
            codes.append("404")
        error = self.resolve_serializer(ErrorSerializer, "response").ref
        for code in codes:
            operation["responses"].setdefault(
                code, {"description": _GENERIC[code], "content": {"application/json": {"schema": error}}}
            )
        return operation

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from annotate.errors import ServiceError


def exception_handler(exc, context):
    """Every error of the API answers {"error": code, "detail": message}, so
    a client reads one shape: a ServiceError's own code, and for DRF's
    answers (401, 403, 404, 405, 415, 429, a body of the wrong type) DRF's
    code with DRF's message; a body's field errors go under "errors"."""
    if isinstance(exc, ServiceError):
        body = {"error": exc.code, "detail": exc.message}
        if exc.details is not None:
            body["errors"] = exc.details
        return Response(body, status=exc.status_code)
    # As DRF's handler does, so the code below is the one DRF answers with.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response = drf_exception_handler(exc, context)  # headers too: WWW-Authenticate, Allow, Retry-After
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"error": "invalid", "detail": _summary(response.data), "errors": response.data}
    elif isinstance(response.data, dict) and "detail" in response.data:
        code = getattr(exc.detail, "code", None) or exc.default_code
        response.data = {"error": str(code), **response.data}
    else:
        response.data = {"error": exc.default_code, "detail": _summary(response.data), "errors": response.data}
    return response


def _summary(data) -> str:
    """One line of a field map's messages, for a client that shows `detail`."""
    if isinstance(data, dict):
        parts = []
        for field, messages in data.items():
            text = _summary(messages)
            parts.append(text if field in ("non_field_errors", "detail") else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(data, list):
        return " ".join(_summary(item) for item in data)
    return str(data)


def _api_not_found(path: str) -> JsonResponse:
    detail = f"No API at {path}; see /api/docs/ for the operations."
    if not path.endswith("/"):
        try:
            if resolve(path + "/").func is not unknown_api_path:
                detail = f"No API at {path}; did you mean {path}/ ?"
        except Resolver404:
            pass
    return JsonResponse({"error": "not_found", "detail": detail}, status=404)


@csrf_exempt  # a POST answers the 404, not the CSRF middleware's HTML 403
def unknown_api_path(request, rest=""):
    """The last route under /api/: a path that names no operation answers the
    API's JSON 404, with DEBUG on too (Django's debug page would answer
    HTML, and handler404 only runs with DEBUG off)."""
    return _api_not_found(request.path)


def not_found(request, exception=None):
    """settings' handler404: under /api/ a JSON 404 in the API's error shape
    (a client parses every answer of the API the same way); elsewhere
    Django's page."""
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return _api_not_found(request.path)
    return page_not_found(request, exception)

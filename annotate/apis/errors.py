from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from annotate.errors import ServiceError


def exception_handler(exc, context):
    """Service errors become a 4xx with {"error": code, "detail": message};
    DRF's own errors keep DRF's shape."""
    if isinstance(exc, ServiceError):
        body = {"error": exc.code, "detail": exc.message}
        if exc.details is not None:
            body["errors"] = exc.details
        return Response(body, status=exc.status_code)
    return drf_exception_handler(exc, context)


def not_found(request, exception=None):
    """settings' handler404: under /api/ a JSON 404 in the API's error shape
    (a client parses every answer of the API the same way); elsewhere
    Django's page."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": "not_found", "detail": f"No API at {request.path}; see /api/docs/ for the operations."},
            status=404,
        )
    return page_not_found(request, exception)

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from annotate.apis.errors import unknown_api_path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("annotate.urls")),
    # The OpenAPI schema, and a browsable view of it.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Last under /api/: a path no operation matches answers the API's JSON 404, DEBUG or not.
    re_path(r"^api/", unknown_api_path, name="api-unknown"),
    path("", include("frontend.urls")),
]

# JSON under /api/ (a path no route matches, such as a non-numeric id), HTML elsewhere.
handler404 = "annotate.apis.errors.not_found"

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("annotate.urls")),
    # The OpenAPI schema, and a browsable view of it.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("frontend.urls")),
]

# JSON under /api/ (a path no route matches, such as a non-numeric id), HTML elsewhere.
handler404 = "annotate.apis.errors.not_found"

"""Console URLs, one module per area so each area's pages live together."""
from django.urls import include, path

urlpatterns = [
    # campaigns list, create, edit, pause/resume/archive, annotator pool
    path("", include("frontend.console.urls_campaigns")),
    # prompts, answers and gold imports, gold pool, quality, leaderboard, exports
    path("", include("frontend.console.urls_data")),
    # training runs (live progress, curves, cancel, trigger), versions, downloads
    path("", include("frontend.console.urls_training")),
    # endpoints (OpenAI-compatible servers) and their generation jobs, live
    path("", include("frontend.console.urls_endpoints")),
    # demonstrations written on the rating page, and their review
    path("", include("frontend.console.urls_demonstrations")),
]

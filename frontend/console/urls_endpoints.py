"""Console: a campaign's endpoints (list, add, edit, delete, generate) and
their generation jobs live (frontend/console/endpoints.py)."""
from django.urls import path

from frontend.console import endpoints

urlpatterns = [
    path("campaigns/<int:campaign_id>/endpoints/", endpoints.endpoints, name="console-endpoints"),
    path("endpoints/<int:endpoint_id>/", endpoints.endpoint_edit, name="console-endpoint"),
    path("endpoints/<int:endpoint_id>/delete/", endpoints.endpoint_remove, name="console-endpoint-delete"),
    path("endpoints/<int:endpoint_id>/generate/", endpoints.generation_start, name="console-generation-start"),
    path("generation-jobs/<int:job_id>/", endpoints.generation_job, name="console-generation-job"),
    path("generation-jobs/<int:job_id>/cancel/", endpoints.generation_job_stop, name="console-generation-job-cancel"),
]

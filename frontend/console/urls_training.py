"""Console: training runs (list and "Train now", one run live, cancel), the
lineage of model versions, and two versions side by side
(frontend/console/training.py)."""
from django.urls import path

from frontend.console import training

urlpatterns = [
    path("campaigns/<int:campaign_id>/runs/", training.runs, name="console-runs"),
    path("campaigns/<int:campaign_id>/lineage/", training.lineage, name="console-lineage"),
    path("campaigns/<int:campaign_id>/compare/", training.compare, name="console-compare"),
    path("runs/compare/", training.runs_compare, name="console-runs-compare"),
    path("runs/<int:run_id>/", training.run_detail, name="console-run"),
    path("runs/<int:run_id>/cancel/", training.run_cancel, name="console-run-cancel"),
]

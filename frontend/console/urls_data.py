"""Console: prompts, answers and gold imports, the gold pool, quality, the
models leaderboard and exports (frontend/console/data.py)."""
from django.urls import path

from frontend.console import data

urlpatterns = [
    path("campaigns/<int:campaign_id>/prompts/", data.prompts, name="console-prompts"),
    path("campaigns/<int:campaign_id>/answers/", data.answers, name="console-answers"),
    path("campaigns/<int:campaign_id>/gold/", data.gold, name="console-gold"),
    path("campaigns/<int:campaign_id>/quality/", data.quality, name="console-quality"),
    path("campaigns/<int:campaign_id>/models/", data.models, name="console-models"),
    path("campaigns/<int:campaign_id>/exports/", data.exports, name="console-exports"),
]

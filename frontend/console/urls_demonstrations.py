"""Console: demonstrations and their review (frontend/console/demonstrations.py)."""
from django.urls import path

from frontend.console import demonstrations

urlpatterns = [
    path("campaigns/<int:campaign_id>/demonstrations/", demonstrations.demonstrations,
         name="console-demonstrations"),
    path("campaigns/<int:campaign_id>/demonstrations/<int:demonstration_id>/review/",
         demonstrations.demonstration_review_post, name="console-demonstration-review"),
]

"""Console: campaigns list, create, overview and edit, pause / resume /
archive, start and train now, the overview's live panel (frontend/console/campaigns.py), and the annotator pool (frontend/console/pool.py)."""
from django.urls import path, re_path

from frontend.console import campaigns, pool

urlpatterns = [
    path("", campaigns.campaign_list, name="console-campaigns"),
    path("campaigns/new/", campaigns.campaign_new, name="console-campaign-new"),
    path("campaigns/<int:campaign_id>/", campaigns.campaign_detail, name="console-campaign"),
    # Only these three words: other console areas live under campaigns/<id>/ too.
    re_path(
        r"^campaigns/(?P<campaign_id>[0-9]+)/(?P<action>pause|resume|archive)/$", campaigns.campaign_action,
        name="console-campaign-action",
    ),
    re_path(
        r"^campaigns/(?P<campaign_id>[0-9]+)/(?P<action>start|train)/$", campaigns.campaign_run_action,
        name="console-campaign-run-action",
    ),
    path("campaigns/<int:campaign_id>/now/", campaigns.campaign_now, name="console-campaign-now"),
    # evaluation campaigns: start, add comparisons
    path("campaigns/<int:campaign_id>/evaluation/", campaigns.evaluation_action, name="console-evaluation"),
    path("campaigns/<int:campaign_id>/pool/", pool.pool, name="console-pool"),
    path("campaigns/<int:campaign_id>/pool/create/", pool.pool_create, name="console-pool-create"),
    path("campaigns/<int:campaign_id>/pool/add/", pool.pool_add, name="console-pool-add"),
    path(
        "campaigns/<int:campaign_id>/pool/members/<str:username>/", pool.pool_member,
        name="console-pool-member",
    ),
    # staff: who administers the campaign (shown on the pool page)
    path("campaigns/<int:campaign_id>/admins/add/", pool.admins_add, name="console-admins-add"),
    path(
        "campaigns/<int:campaign_id>/admins/<str:username>/remove/", pool.admin_remove,
        name="console-admin-remove",
    ),
]

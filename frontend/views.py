from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from annotate.selectors import campaign_current_round, campaigns_visible_to, round_progress, user_roles


@login_required
def home(request):
    rows = []
    for campaign in campaigns_visible_to(user=request.user).order_by("pk"):
        round_ = campaign_current_round(campaign=campaign)
        rows.append({"campaign": campaign, "progress": round_progress(round_=round_) if round_ else None})
    return render(request, "frontend/home.html", {"rows": rows, "roles": sorted(user_roles(user=request.user))})

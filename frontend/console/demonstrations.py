"""Console: a campaign's demonstrations (better answers written on the
rating page) and their review: accept, reject with a reason, or edit and
accept. Thin: the rules (who may review, how many accepts decide) are in
annotate/services/demonstrations.py."""
from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from annotate.errors import ServiceError
from annotate.models import Demonstration, Role
from annotate.selectors.demonstrations import demonstration_counts, demonstrations_for_review
from annotate.services.demonstrations import demonstration_review
from frontend.console.access import console_view

PAGE_SIZE = 20

review_view = console_view(post_role=Role.CAMPAIGN_ADMIN, post_refusal="Only campaign admins review demonstrations.")


@review_view
@require_http_methods(["GET"])
def demonstrations(request, campaign_id: int):
    campaign = request.campaign
    status = request.GET.get("status") or Demonstration.Status.PENDING
    if status not in Demonstration.Status.values:
        status = Demonstration.Status.PENDING
    page = Paginator(demonstrations_for_review(campaign=campaign, status=status), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(request, "frontend/console/demonstrations.html", {
        "campaign": campaign, "page": page, "status": status, "counts": demonstration_counts(campaign=campaign),
        "statuses": Demonstration.Status.values, "extra_query": f"&status={status}",
    })


@review_view
@require_POST
def demonstration_review_post(request, campaign_id: int, demonstration_id: int):
    """One verdict from the list: accept, reject (reason), or accept with the edited text."""
    post = request.POST
    edited = post.get("edited_text")
    if edited is not None:
        edited = edited.replace("\r\n", "\n")  # a textarea sends CRLF; the author's text has LF
    try:
        demo = demonstration_review(
            campaign=request.campaign, demonstration_id=demonstration_id, reviewer=request.user,
            verdict=post.get("verdict", ""), reason=post.get("reason", ""), edited_text=edited,
        )
    except ServiceError as exc:
        messages.error(request, f"Demonstration {demonstration_id}: {exc.message}")
    else:
        if demo.status == Demonstration.Status.PENDING:
            messages.success(request, f"Demonstration {demo.pk}: your accept is in; it needs another reviewer's.")
        else:
            messages.success(request, f"Demonstration {demo.pk} {demo.status}.")
    return redirect(f"/console/campaigns/{request.campaign.pk}/demonstrations/")

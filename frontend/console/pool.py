"""Console pages for a campaign's annotator pool and its admins: thin views
that parse the form, call one service (annotate/services/memberships.py,
users.py, campaigns.py for admins) and render the pool page again with the
service's per-field errors next to the form they came from.

Campaign admins (and staff) may change the pool; only staff name a campaign's
admins; ML engineers may look."""
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpResponseForbidden
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from annotate.errors import ServiceError
from annotate.selectors.memberships import campaign_admins, campaign_members, pool_memberships
from annotate.services.campaigns import campaign_admin_remove, campaign_admins_add
from annotate.services.memberships import UNSET, membership_update, memberships_add
from annotate.services.users import annotator_create
from frontend.console.access import admin_view, form_errors as _errors

# Each member's row carries four forms: 200 members made a 384 KiB page.
POOL_PAGE_SIZE = 50

def _pool_page(request, campaign, *, status=200, focus: str | None = None, **context):
    """The page of members `?page=` asks for, or the one holding `focus` (whose change failed)."""
    context.setdefault("errors", {})
    context.setdefault("form", {})
    memberships = list(pool_memberships(campaign=campaign))
    number = request.GET.get("page")
    if focus is not None:
        at = next((i for i, m in enumerate(memberships) if m.annotator.username == focus), 0)
        number = at // POOL_PAGE_SIZE + 1
    page = Paginator(memberships, POOL_PAGE_SIZE).get_page(number)
    return render(
        request,
        "frontend/console/pool.html",
        {"campaign": campaign, "page": page, "n_members": len(memberships),
         "members": campaign_members(campaign=campaign, memberships=page.object_list),
         "admins": list(campaign_admins(campaign=campaign)), **context},
        status=status,
    )


@admin_view
@require_http_methods(["GET"])
def pool(request, campaign_id: int):
    campaign = request.campaign
    return _pool_page(request, campaign)


@admin_view
@require_POST
def pool_create(request, campaign_id: int):
    """Create an annotator account and put it in the pool in one step. A
    generated password is shown on this answer only (no redirect: a reload
    must not be the way to see it again)."""
    campaign = request.campaign
    post = request.POST
    username = post.get("username", "").strip()
    try:
        with transaction.atomic():
            user, generated = annotator_create(username=username, password=post.get("password") or None)
            memberships_add(campaign=campaign, usernames=[user.username], daily_limit=post.get("daily_limit") or None)
    except ServiceError as exc:
        return _pool_page(request, campaign, status=400, errors={"create": _errors(exc, "username")}, form={"create": post})
    return _pool_page(request, campaign, created=user.username, generated_password=generated)


@admin_view
@require_POST
def pool_add(request, campaign_id: int):
    """Add existing annotators: usernames separated by commas, spaces or lines."""
    campaign = request.campaign
    post = request.POST
    usernames = post.get("usernames", "").replace(",", " ").split()
    try:
        memberships_add(campaign=campaign, usernames=usernames, daily_limit=post.get("daily_limit") or None)
    except ServiceError as exc:
        return _pool_page(request, campaign, status=400, errors={"add": _errors(exc, "usernames")}, form={"add": post})
    messages.success(request, f"Added to the pool: {', '.join(sorted(set(usernames)))}.")
    return redirect(f"/console/campaigns/{campaign.pk}/pool/")


@admin_view
@require_POST
def pool_member(request, campaign_id: int, username: str):
    """One member's row: a new daily limit, or pause (with a reason),
    reinstate or remove."""
    campaign = request.campaign
    post = request.POST
    try:
        membership_update(
            campaign=campaign,
            username=username,
            status=post.get("status") or None,
            reason=post.get("reason", ""),
            daily_limit=(post.get("daily_limit") or None) if "daily_limit" in post else UNSET,
        )
    except ServiceError as exc:
        return _pool_page(request, campaign, status=400, errors={username: _errors(exc, "status")},
                          form={username: post}, focus=username)
    messages.success(request, f"Saved {username}.")
    return redirect(f"/console/campaigns/{campaign.pk}/pool/")


# --- campaign admins (staff only) ----------------------------------------------------


def _staff_only(request):
    if not request.is_staff_user:
        return HttpResponseForbidden("Only staff can choose a campaign's admins.")
    return None


@admin_view
@require_POST
def admins_add(request, campaign_id: int):
    """Make users admins of this campaign: usernames separated by commas,
    spaces or lines."""
    if refusal := _staff_only(request):
        return refusal
    campaign = request.campaign
    usernames = request.POST.get("usernames", "").replace(",", " ").split()
    try:
        campaign_admins_add(campaign=campaign, usernames=usernames)
    except ServiceError as exc:
        return _pool_page(
            request, campaign, status=400, errors={"admins": _errors(exc, "usernames")}, form={"admins": request.POST}
        )
    messages.success(request, f"Now admins of this campaign: {', '.join(sorted(set(usernames)))}.")
    return redirect(f"/console/campaigns/{campaign.pk}/pool/")


@admin_view
@require_POST
def admin_remove(request, campaign_id: int, username: str):
    if refusal := _staff_only(request):
        return refusal
    campaign = request.campaign
    try:
        campaign_admin_remove(campaign=campaign, username=username)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{username} no longer administers this campaign.")
    return redirect(f"/console/campaigns/{campaign.pk}/pool/")

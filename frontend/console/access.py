"""Who may see and change console pages."""
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponseForbidden
from django.shortcuts import get_object_or_404

from annotate.models import Role
from annotate.selectors.access import campaigns_managed_by, campaigns_readable_by, user_is_staff, user_roles


def console_view(*, post_role: str | None = None, post_refusal: str = ""):
    """Logged in, and a campaign admin or ML engineer (staff count as both).
    A POST needs `post_role` (None: the page takes no POST from anyone
    special).

    A page under campaigns/<campaign_id>/ shows only a campaign the user may
    read (staff and ML engineers: every one; campaign admins: the campaigns
    they administer), else 404 as for a missing one; the campaign is put on
    request.campaign. Sets request.can_edit (may change this campaign, or on
    pages of no campaign, may create one), request.can_train (engineer) and
    request.is_staff_user, so templates show only the controls a user may use."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            roles = user_roles(user=request.user)
            if not roles & {Role.CAMPAIGN_ADMIN, Role.ML_ENGINEER}:
                return HttpResponseForbidden("The console is for campaign admins and ML engineers.")
            request.roles = roles
            request.is_staff_user = user_is_staff(user=request.user)
            request.can_edit = Role.CAMPAIGN_ADMIN in roles
            request.can_train = Role.ML_ENGINEER in roles
            if "campaign_id" in kwargs:
                request.campaign = get_object_or_404(
                    campaigns_readable_by(user=request.user, roles=roles), pk=kwargs["campaign_id"]
                )
                if request.can_edit and not request.is_staff_user and Role.ML_ENGINEER in roles:
                    # An admin who is also an engineer reads every campaign
                    # but changes only those they administer. (For anyone
                    # else, what they read is what they manage.)
                    request.can_edit = (
                        campaigns_managed_by(user=request.user, roles=roles).filter(pk=request.campaign.pk).exists()
                    )
            if post_role and request.method == "POST":
                if post_role not in roles:
                    return HttpResponseForbidden(post_refusal)
                if post_role == Role.CAMPAIGN_ADMIN and hasattr(request, "campaign") and not request.can_edit:
                    return HttpResponseForbidden("You do not administer this campaign; its admins or staff can change it.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


# The console's campaign and pool pages: anyone with a console role may look;
# changing needs a campaign admin (or staff).
admin_view = console_view(
    post_role=Role.CAMPAIGN_ADMIN, post_refusal="Only campaign admins can change campaigns and pools."
)


def form_errors(exc, default_field: str | None = None) -> dict:
    """Per-field messages of a service error (annotate.errors.ServiceError);
    the whole message under `default_field` (or "form") when the service
    named no field."""
    if isinstance(exc.details, dict):
        return {k: str(v) for k, v in exc.details.items()}
    return {default_field or "form": exc.message}

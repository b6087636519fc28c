"""Who may call what. Two steps, in this order:

1. The role (these permission classes): a user without the role an API
   needs gets 403, whatever the id in the path.
2. The campaign (the *_or_404 helpers below): an id of a campaign, run,
   version or export outside the user's campaigns answers 404, as a missing
   one does, so that ids reveal nothing (annotate/selectors/access.py says
   who sees which campaign: staff and ML engineers every one, campaign
   admins the campaigns they administer, annotators their pools)."""
from django.db.models import Model, QuerySet
from django.shortcuts import get_object_or_404
from rest_framework.permissions import SAFE_METHODS, BasePermission

from annotate.models import Campaign, Role
from annotate.selectors.access import campaigns_managed_by, campaigns_readable_by, user_is_staff, user_roles


class _HasRole(BasePermission):
    role: str = ""
    message = ""

    def has_permission(self, request, view) -> bool:
        return self.role in user_roles(user=request.user)


class IsAnnotator(_HasRole):
    role = Role.ANNOTATOR
    message = "Only annotators can do this; ask a campaign admin to add you to the 'annotator' group."


class IsCampaignAdmin(_HasRole):
    role = Role.CAMPAIGN_ADMIN
    message = "Only campaign admins can do this."


class IsMLEngineer(_HasRole):
    role = Role.ML_ENGINEER
    message = "Only ML engineers can do this."


class IsAdminOrEngineer(BasePermission):
    message = "Only campaign admins and ML engineers can do this."

    def has_permission(self, request, view) -> bool:
        return bool(user_roles(user=request.user) & {Role.CAMPAIGN_ADMIN, Role.ML_ENGINEER})


class IsStaff(BasePermission):
    message = "Only staff can do this."

    def has_permission(self, request, view) -> bool:
        return user_is_staff(user=request.user)


class AdminsAndEngineersRead:
    """For an API view (put it before APIView in the bases) whose GET any
    campaign admin or ML engineer may call and whose other methods need
    `write_permission`."""

    write_permission: type[BasePermission]

    def get_permissions(self):
        return [IsAdminOrEngineer()] if self.request.method in SAFE_METHODS else [self.write_permission()]


def managed_campaign_or_404(request, campaign_id: int) -> Campaign:
    """The campaign, if this user may change it (staff, or one of its admins)."""
    return get_object_or_404(campaigns_managed_by(user=request.user), pk=campaign_id)


def readable_campaign_or_404(request, campaign_id: int) -> Campaign:
    """The campaign, if this user may read its admin and engineer data."""
    return get_object_or_404(campaigns_readable_by(user=request.user), pk=campaign_id)


def readable_or_404(request, queryset: QuerySet, pk: int) -> Model:
    """A row of a model with a `campaign` (run, version, export), if its
    campaign is one this user may read."""
    return get_object_or_404(queryset.filter(campaign__in=campaigns_readable_by(user=request.user)), pk=pk)

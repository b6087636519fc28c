from rest_framework.permissions import BasePermission

from annotate.models import Role
from annotate.selectors import user_roles


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

"""Who may do what and see which campaign: a user's roles, and the campaigns
they see (to rate), read (console pages, admin and engineer APIs) and manage
(change as a campaign admin). The API's permissions (annotate/apis/permissions.py)
and the console's (frontend/console/access.py) ask these."""
from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet

from annotate.models import Campaign, Membership, Role

User = get_user_model()


def user_is_staff(*, user: User) -> bool:
    """Staff and superusers: every campaign, every role (docs/architecture.md, invariant 7)."""
    return bool(user.is_authenticated and (user.is_staff or user.is_superuser))


# Where the API's authentication (annotate/apis/authentication.py) leaves the
# user's role names for the rest of the request: read once, not per check.
ROLES_ATTR = "_ratchet_role_names"


def user_group_roles(*, user: User) -> frozenset[str]:
    """The roles the user's groups give (staff's implied ones not added)."""
    return frozenset(user.groups.filter(name__in=Role.values).values_list("name", flat=True))


def user_roles(*, user: User) -> set[str]:
    if not user.is_authenticated:
        return set()
    # Set only on request users, by the API's authentication; any other user
    # object reads its groups each time (a service may just have changed them).
    names = getattr(user, ROLES_ATTR, None)
    roles = set(user_group_roles(user=user) if names is None else names)
    if user_is_staff(user=user):
        roles |= {Role.CAMPAIGN_ADMIN, Role.ML_ENGINEER}
    return roles


# Who sees which campaign. A campaign outside a user's set answers 404, never
# 403, so that ids reveal nothing about campaigns one has no part in:
# - staff: every campaign;
# - ML engineers: every campaign, to read and to train (the models and data
#   of all campaigns are their work; docs/architecture.md gives them no campaign scope);
# - campaign admins: the campaigns they administer (Campaign.admins);
# - annotators: the campaigns whose pool they are in.


def campaigns_managed_by(*, user: User, roles: set[str] | None = None) -> QuerySet[Campaign]:
    """The campaigns this user may change as a campaign admin: staff every
    one, an admin those they administer, anyone else none."""
    roles = user_roles(user=user) if roles is None else roles
    if user_is_staff(user=user):
        return Campaign.objects.all()
    if Role.CAMPAIGN_ADMIN in roles:
        return Campaign.objects.filter(admins=user)
    return Campaign.objects.none()


def campaigns_readable_by(*, user: User, roles: set[str] | None = None) -> QuerySet[Campaign]:
    """The campaigns whose console pages and admin/engineer APIs this user may
    read: staff and ML engineers every one, admins those they administer."""
    roles = user_roles(user=user) if roles is None else roles
    if user_is_staff(user=user) or Role.ML_ENGINEER in roles:
        return Campaign.objects.all()
    return campaigns_managed_by(user=user, roles=roles)


def campaigns_visible_to(*, user: User) -> QuerySet[Campaign]:
    """The campaigns listed to this user and open to them for rating:
    annotators the campaigns whose pool they are in (invariant 7), admins
    those too and the campaigns they administer, staff and engineers all."""
    roles = user_roles(user=user)
    if user_is_staff(user=user) or Role.ML_ENGINEER in roles:
        return Campaign.objects.all()
    # One filter() call: both conditions on the same membership row. A paused
    # annotator still sees the campaign (and is told why there is no work);
    # a removed one does not.
    in_pool = Campaign.objects.filter(
        memberships__annotator=user, memberships__status__in=[Membership.Status.ACTIVE, Membership.Status.PAUSED]
    )
    if Role.CAMPAIGN_ADMIN in roles:
        return Campaign.objects.filter(
            Q(pk__in=in_pool.values("pk")) | Q(pk__in=campaigns_managed_by(user=user, roles=roles).values("pk"))
        )
    return in_pool


def campaign_visibility_sql(*, user: User, campaign_column: str) -> tuple[str, list] | None:
    """campaigns_visible_to as a SQL condition on `campaign_column`, for the
    statements the annotator's hot path writes by hand (" AND ...", params);
    "" when every campaign is visible, None when none is. Annotators' rule
    is written out here (the pool, active or paused); others' sets are
    rarer on that path and read through campaigns_visible_to."""
    if not user.is_authenticated:
        return None
    roles = user_roles(user=user)
    if user_is_staff(user=user) or Role.ML_ENGINEER in roles:
        return "", []
    if Role.CAMPAIGN_ADMIN in roles:
        ids = list(campaigns_visible_to(user=user).values_list("pk", flat=True))
        if not ids:
            return None
        return f" AND {campaign_column} IN ({', '.join(['%s'] * len(ids))})", ids
    return (
        f" AND EXISTS (SELECT 1 FROM {Membership._meta.db_table} vm WHERE vm.campaign_id = {campaign_column}"
        " AND vm.annotator_id = %s AND vm.status IN (%s, %s))",
        [user.pk, Membership.Status.ACTIVE, Membership.Status.PAUSED],
    )

"""Annotator pools: who is in a campaign, their daily limit, pause and removal.

A membership is never deleted: a removed annotator's ratings stay in the
data and keep pointing at them, and adding them again reactivates the row."""
from django.contrib.auth import get_user_model
from django.db import transaction

from annotate.errors import NotFound, ServiceError, ValidationFailed
from annotate.models import Campaign, Membership, Rating, Role
from annotate.selectors.rounds import day_start

User = get_user_model()

REASON_MAX_CHARS = 2000


# --- why the next API gives no work ------------------------------------------------
# Each becomes {"error": code, "detail": message} (annotate/apis/errors.py); the
# rating page shows the detail instead of "nothing left to rate".


class MemberPaused(ServiceError):
    """An admin (or the gold-accuracy check) paused this annotator in this campaign."""

    status_code = 403
    code = "paused"


class DailyLimitReached(ServiceError):
    # 429, not 409: the rating page waits and asks again after a 409 (two
    # leases still held by submits in flight); a limit is not worth retrying today.
    status_code = 429
    code = "daily_limit"


class CampaignNotCollecting(ServiceError):
    """The campaign is paused or archived; `code` is campaign_paused or campaign_archived."""

    status_code = 409

    def __init__(self, campaign: Campaign):
        self.code = f"campaign_{campaign.status}"
        if campaign.status == Campaign.Status.ARCHIVED:
            message = f"Campaign '{campaign.name}' is archived; it takes no more ratings."
        else:
            message = f"Campaign '{campaign.name}' is paused by its admins; there is no work until they resume it."
        super().__init__(message)


# The default of `membership` below: the caller has not read the row, so
# membership_work_check reads it (None would mean "read: not in the pool").
MEMBERSHIP_UNREAD = object()


def membership_work_check(*, annotator: User, campaign: Campaign, membership=MEMBERSHIP_UNREAD) -> Membership | None:
    """Raise the reason this annotator may get no comparison of the campaign,
    if any; their membership otherwise. Staff and admins outside the pool
    (who may rate when they are also annotators) have none: no check.
    `membership`: the row (or None) when the caller has read it already."""
    if campaign.status in (Campaign.Status.PAUSED, Campaign.Status.ARCHIVED):
        raise CampaignNotCollecting(campaign)
    if membership is MEMBERSHIP_UNREAD:
        membership = Membership.objects.filter(campaign=campaign, annotator=annotator).first()
    if membership is None:
        return None
    if membership.status == Membership.Status.PAUSED:
        why = membership.paused_reason or "no reason given"
        who = "the gold-pair accuracy check" if membership.paused_automatically else "a campaign admin"
        raise MemberPaused(f"You are paused in this campaign by {who}: {why}. Ask a campaign admin to reinstate you.")
    if membership.status == Membership.Status.REMOVED:
        raise NotFound("You are no longer in this campaign's pool.")
    return membership


def membership_daily_limit_check(*, membership: Membership | None, held: int) -> None:
    """Raise DailyLimitReached when a new lease would take the annotator past
    their daily limit. `held`: live leases they hold already (the comparison on
    screen and the prefetched one), so a limit of 10 never becomes 11."""
    if membership is None or membership.daily_limit is None:
        return
    today = Rating.objects.filter(
        annotator_id=membership.annotator_id, comparison__round__campaign_id=membership.campaign_id,
        created_at__gte=day_start(),
    ).count()
    if today + held >= membership.daily_limit:
        raise DailyLimitReached(
            f"You reached your daily limit of {membership.daily_limit} ratings in this campaign "
            f"({today} rated today, {held} on your screen); come back tomorrow."
        )


# --- admin operations -----------------------------------------------------------------


def _daily_limit_validate(value) -> int | None:
    if value is None or value == "":
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise ValidationFailed(f"daily_limit must be a whole number of ratings or empty, not {value!r}.",
                               details={"daily_limit": "a whole number, or empty for no limit"}) from None
    if not 1 <= value <= 100000:
        raise ValidationFailed(f"daily_limit must be between 1 and 100000 (empty: no limit), not {value}.",
                               details={"daily_limit": "between 1 and 100000, or empty for no limit"})
    return value


@transaction.atomic
def memberships_add(*, campaign: Campaign, usernames: list[str], daily_limit: int | None = None) -> list[Membership]:
    """Put annotators in the campaign's pool (active). Someone already in it
    keeps their standing; someone removed earlier is active again. A daily
    limit, when given, is set on every one of them."""
    daily_limit = _daily_limit_validate(daily_limit)
    usernames = list(dict.fromkeys(u.strip() for u in usernames if u.strip()))
    if not usernames:
        raise ValidationFailed("Name at least one annotator.", details={"usernames": "name at least one annotator"})
    users = list(User.objects.filter(username__in=usernames).prefetch_related("groups"))
    missing = sorted(set(usernames) - {u.username for u in users})
    if missing:
        raise ValidationFailed(f"No such users: {', '.join(missing)}. Create them first.",
                               details={"usernames": f"no such users: {', '.join(missing)}"})
    not_annotators = sorted(u.username for u in users if Role.ANNOTATOR not in {g.name for g in u.groups.all()})
    if not_annotators:
        raise ValidationFailed(
            f"Not in the '{Role.ANNOTATOR}' group: {', '.join(not_annotators)}. Add them to it first.",
            details={"usernames": f"not annotators: {', '.join(not_annotators)}"},
        )
    existing = {m.annotator_id: m for m in Membership.objects.select_for_update().filter(campaign=campaign, annotator__in=users)}
    new = [Membership(campaign=campaign, annotator=u, daily_limit=daily_limit) for u in users if u.pk not in existing]
    Membership.objects.bulk_create(new)
    for m in existing.values():
        fields = []
        if m.status == Membership.Status.REMOVED:
            m.status, m.paused_reason, m.paused_automatically = Membership.Status.ACTIVE, "", False
            fields += ["status", "paused_reason", "paused_automatically"]
        if daily_limit is not None:
            m.daily_limit = daily_limit
            fields.append("daily_limit")
        if fields:
            m.save(update_fields=fields)
    by_user = {m.annotator_id: m for m in [*existing.values(), *new]}
    return [by_user[u.pk] for u in sorted(users, key=lambda u: u.username)]


UNSET = object()


@transaction.atomic
def membership_update(
    *, campaign: Campaign, username: str, status: str | None = None, reason: str = "", daily_limit=UNSET,
) -> Membership:
    """Change one annotator's standing in the pool: `status` active (reinstate),
    paused (needs a reason, shown to them) or removed (their ratings stay);
    `daily_limit` a number or None for no limit. Leases they hold run out on
    their own; a paused or removed annotator gets no new ones."""
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("annotator")
        .filter(campaign=campaign, annotator__username=username)
        .first()
    )
    if membership is None:
        raise NotFound(f"'{username}' is not in the pool of campaign '{campaign.name}'; add them first.")
    fields = []
    if daily_limit is not UNSET:
        membership.daily_limit = _daily_limit_validate(daily_limit)
        fields.append("daily_limit")
    if status is not None:
        reason = (reason or "").strip()
        if status not in Membership.Status.values:
            raise ValidationFailed(f"status must be one of {', '.join(Membership.Status.values)}, not {status!r}.",
                                   details={"status": f"one of {', '.join(Membership.Status.values)}"})
        if len(reason) > REASON_MAX_CHARS:
            raise ValidationFailed(f"reason is {len(reason)} characters; the limit is {REASON_MAX_CHARS}.",
                                   details={"reason": f"at most {REASON_MAX_CHARS} characters"})
        if status == Membership.Status.PAUSED and not reason:
            raise ValidationFailed("Say why you pause this annotator: they are shown the reason.",
                                   details={"reason": "say why; the annotator is shown it"})
        membership.status = status
        # An admin's pause or reinstatement replaces an automatic one.
        membership.paused_automatically = False
        membership.paused_reason = reason if status == Membership.Status.PAUSED else ""
        fields += ["status", "paused_reason", "paused_automatically"]
    if fields:
        membership.save(update_fields=fields)
    return membership

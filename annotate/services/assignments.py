from collections.abc import Collection
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotate.errors import Conflict, ValidationFailed
from annotate.models import Assignment, Campaign, Comparison, Round
from annotate.services.memberships import membership_daily_limit_check, membership_work_check

User = get_user_model()

# Live leases one annotator may hold in a campaign: the comparison on screen
# and the one the page prefetched, so the next appears at once after a submit.
MAX_LIVE_LEASES = 2


def live_leases(*, now, exclude_annotator=None):
    """Leases that still hold a slot of their comparison."""
    qs = Assignment.objects.filter(status=Assignment.Status.LEASED, leased_until__gt=now)
    if exclude_annotator is not None:
        qs = qs.exclude(annotator=exclude_annotator)
    return qs


def comparison_free_slots(*, comparison: Comparison, annotator: User, now) -> int:
    """Slots left for this annotator: k minus ratings minus others' live leases.
    Call with the comparison row locked."""
    held = live_leases(now=now, exclude_annotator=annotator).filter(comparison=comparison).count()
    return comparison.round.campaign.overlap - comparison.rating_count - held


@transaction.atomic
def comparison_lease_next(
    *, annotator: User, campaign: Campaign, exclude: Collection[int] = ()
) -> Assignment | None:
    """Lease the next comparison of the campaign's open round to this annotator.

    A comparison never has more than k ratings plus live leases, and an
    annotator never gets a comparison they rated or skipped. The annotator's
    own live lease comes back first, so a reload shows the same comparison.

    `exclude`: comparisons the page already shows; it gets another live lease
    of mine or a new one (prefetch). An annotator holds at most
    MAX_LIVE_LEASES live leases in a campaign; asking for more is a Conflict.

    No work, with the reason: a paused or archived campaign
    (CampaignNotCollecting, 409), a paused annotator (MemberPaused, 403, with
    the admin's reason), or one at their daily limit (DailyLimitReached, 429).
    """
    exclude = {int(pk) for pk in exclude}
    now = timezone.now()
    # A paused or archived campaign, or a paused annotator: an error that says
    # why, which the rating page shows instead of "nothing left to rate".
    membership = membership_work_check(annotator=annotator, campaign=campaign)
    if campaign.status != Campaign.Status.ACTIVE:
        return None
    round_ = campaign.rounds.filter(status=Round.Status.COLLECTING).order_by("-index").first()
    if round_ is None:
        return None
    mine_live = Assignment.objects.filter(
        annotator=annotator, comparison__round=round_, status=Assignment.Status.LEASED, leased_until__gt=now
    )
    mine = (
        # Everything the next API sends, in the same query.
        mine_live.select_related(
            "comparison__round__campaign", "comparison__round__candidate", "comparison__round__baseline",
            "comparison__prompt", "comparison__response_a", "comparison__response_b",
        )
        .exclude(comparison_id__in=exclude)
        .order_by("leased_at")
        .first()
    )
    if mine is not None:
        return mine
    held = mine_live.count() if (exclude or (membership and membership.daily_limit is not None)) else 0
    if exclude and held >= MAX_LIVE_LEASES:
        raise Conflict(
            f"You already hold {MAX_LIVE_LEASES} comparisons of this campaign; rate or skip one before asking for another."
        )
    membership_daily_limit_check(membership=membership, held=held)

    k = campaign.overlap
    others_live = (
        live_leases(now=now, exclude_annotator=annotator)
        .filter(comparison=OuterRef("pk"))
        .values("comparison")
        .annotate(n=Count("pk"))
        .values("n")
    )
    mine_closed = Assignment.objects.filter(
        comparison=OuterRef("pk"),
        annotator=annotator,
        status__in=[Assignment.Status.DONE, Assignment.Status.RELEASED],
    )
    candidates = (
        Comparison.objects.filter(round=round_, rating_count__lt=k)
        .exclude(pk__in=exclude)
        .annotate(held=Coalesce(Subquery(others_live, output_field=IntegerField()), 0))
        .filter(~Exists(mine_closed))
        # Test fix: free slots are k - ratings - others' live leases. Filtering
        # on held < k alone let full comparisons through; they sort first
        # (most ratings) and, past 20 skips, hid free work (next answered 204).
        .filter(held__lt=k - F("rating_count"))
        .order_by("-rating_count", "pk")
    )
    skipped: list[int] = []
    for _ in range(20):
        # SKIP LOCKED: annotators asking at once each take a different row
        # instead of queueing on the same one (PostgreSQL; SQLite serialises
        # the whole transaction instead, see settings).
        comparison = (
            candidates.exclude(pk__in=skipped)
            .select_for_update(skip_locked=True, of=("self",))
            # The round's versions are for round_progress in the next API.
            .select_related("round__campaign", "round__candidate", "round__baseline")
            .first()
        )
        if comparison is None and not skipped:
            # Test fix: every candidate was locked by annotators leasing at the
            # same moment, which is not "no work": wait for the first one
            # (holding no row lock yet, so this wait cannot deadlock) instead
            # of answering 204 while slots are free.
            comparison = (
                candidates.select_for_update(of=("self",)).select_related("round__campaign").first()
            )
        if comparison is None:
            return None
        # The row is locked now: count again, the first read may be stale.
        comparison.refresh_from_db(fields=["rating_count"])
        if comparison_free_slots(comparison=comparison, annotator=annotator, now=now) <= 0:
            skipped.append(comparison.pk)
            continue
        until = now + timedelta(seconds=campaign.lease_ttl_seconds)
        assignment, _ = Assignment.objects.update_or_create(
            comparison=comparison,
            annotator=annotator,
            defaults={"status": Assignment.Status.LEASED, "leased_at": now, "leased_until": until},
        )
        assignment.comparison = comparison
        return assignment
    return None


@transaction.atomic
def assignment_renew(*, annotator: User, comparison_id: int) -> Assignment:
    """Extend a live lease by the campaign's TTL (the page calls this while the
    annotator is active)."""
    now = timezone.now()
    assignment = (
        Assignment.objects.select_for_update()
        .select_related("comparison__round__campaign")
        .filter(annotator=annotator, comparison_id=comparison_id)
        .first()
    )
    if assignment is None or assignment.status != Assignment.Status.LEASED:
        raise Conflict("You hold no lease on this comparison; ask for the next one.")
    if assignment.leased_until <= now:
        raise Conflict("Your lease on this comparison expired and may have gone to someone else.")
    assignment.leased_until = now + timedelta(seconds=assignment.comparison.round.campaign.lease_ttl_seconds)
    assignment.save(update_fields=["leased_until"])
    return assignment


@transaction.atomic
def assignment_skip(*, annotator: User, comparison_id: int, reason: str) -> Assignment:
    """Give a leased comparison back unrated, saying why. The slot returns to
    the pool at once and this annotator never gets the comparison again."""
    reason = reason.strip()
    if not reason:
        raise ValidationFailed("Say why you skip this comparison (reason is empty).")
    if len(reason) > settings.TEXT_MAX_CHARS:
        raise ValidationFailed(f"reason is {len(reason)} characters; the limit is {settings.TEXT_MAX_CHARS}.")
    # FOR UPDATE: a rating of the same comparison sent at the same moment
    # either lands first (and the skip is refused) or finds the lease released.
    assignment = (
        Assignment.objects.select_for_update().filter(annotator=annotator, comparison_id=comparison_id).first()
    )
    if assignment is None:
        raise Conflict(f"You hold no lease on comparison {comparison_id}, so there is nothing to skip.")
    if assignment.status == Assignment.Status.DONE:
        raise Conflict(f"You already rated comparison {comparison_id}; a rating cannot be skipped.")
    if assignment.status == Assignment.Status.RELEASED:
        raise Conflict(f"Comparison {comparison_id} was already given back (skipped or expired).")
    assignment.status = Assignment.Status.RELEASED
    assignment.skip_reason = reason
    assignment.save(update_fields=["status", "skip_reason"])
    return assignment

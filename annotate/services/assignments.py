from collections.abc import Collection
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from annotate.errors import Conflict, ValidationFailed
from annotate.models import Assignment, Campaign, Comparison, Round
from annotate.services.memberships import MEMBERSHIP_UNREAD, membership_daily_limit_check, membership_work_check

User = get_user_model()

# Live leases one annotator may hold in a campaign: the comparison on screen
# and the one the page prefetched, so the next appears at once after a submit.
MAX_LIVE_LEASES = 2


# The statements below run on every next and every rating. They are SQL, not
# ORM querysets: building them through the ORM cost more than running them
# (e.g. ~4 ms to build the candidate query, 0.2 ms to run the recheck that
# took 2 ms as a queryset; bench/load.py measures the whole loop).
_C, _A = Comparison._meta.db_table, Assignment._meta.db_table
# Live leases (leased, not expired) other annotators hold on comparison c.
_LIVE_BY_OTHERS = (
    f"(SELECT COUNT(*) FROM {_A} o WHERE o.comparison_id = c.id AND o.status = %s"
    " AND o.leased_until > %s AND o.annotator_id <> %s)"
)


def _not_in(column: str, ids: Collection[int]) -> tuple[str, list]:
    if not ids:
        return "", []
    return f" AND {column} NOT IN ({', '.join(['%s'] * len(ids))})", sorted(ids)


def _db_now(now):
    return connection.ops.adapt_datetimefield_value(now)


def comparison_slots(*, comparison_id: int, annotator: User, now) -> tuple[int, int, int | None, str | None]:
    """(ratings, live leases other annotators hold, my assignment's id and
    status or None) of one comparison, in one statement. Call with its row
    locked, so that nobody else changes them until the transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.rating_count, {_LIVE_BY_OTHERS}, m.id, m.status FROM {_C} c"
            f" LEFT JOIN {_A} m ON m.comparison_id = c.id AND m.annotator_id = %s WHERE c.id = %s",
            [Assignment.Status.LEASED, _db_now(now), annotator.pk, annotator.pk, comparison_id],
        )
        return cursor.fetchone()


def _lease_candidate(
    *, round_id: int, k: int, annotator: User, now, exclude: Collection[int], skipped: Collection[int], lock: bool,
) -> int | None:
    """The id of the first comparison of the round this annotator may lease:
    fewer than k ratings plus others' live leases, no lease of mine done or
    released on it; most ratings first (finish what was started), then by id.
    That order is the index comparison_lease_order, so the scan walks it and
    stops at the first that qualifies (the per-row checks run on a handful
    of rows, not on the round). `lock`: FOR UPDATE SKIP LOCKED (PostgreSQL;
    SQLite serialises the whole transaction instead, see settings)."""
    sql = f"SELECT c.id FROM {_C} c WHERE c.round_id = %s AND c.rating_count < %s"
    params: list = [round_id, k]
    clause, ids = _not_in("c.id", set(exclude) | set(skipped))
    sql += clause
    params += ids
    sql += (
        f" AND NOT EXISTS (SELECT 1 FROM {_A} m WHERE m.comparison_id = c.id AND m.annotator_id = %s"
        " AND m.status IN (%s, %s))"
        # Free slots are k - ratings - others' live leases (held < k alone let
        # full comparisons through; they sort first and hid free work).
        f" AND {_LIVE_BY_OTHERS} < %s - c.rating_count"
        " ORDER BY c.rating_count DESC, c.id LIMIT 1"
    )
    params += [annotator.pk, Assignment.Status.DONE, Assignment.Status.RELEASED,
               Assignment.Status.LEASED, _db_now(now), annotator.pk, k]
    if lock and connection.features.has_select_for_update_skip_locked:
        sql += " FOR UPDATE OF c SKIP LOCKED"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


def comparison_lease_next(
    *, annotator: User, campaign: Campaign, exclude: Collection[int] = (), membership=MEMBERSHIP_UNREAD
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
    `membership`: the annotator's pool row (or None), when the caller read it
    with the campaign (selectors.campaign_visible_with_membership).
    """
    return _comparison_lease(annotator=annotator, campaign=campaign, exclude={int(pk) for pk in exclude},
                             membership=membership)


@transaction.atomic
def _comparison_lease(*, annotator: User, campaign: Campaign, exclude: set[int], membership) -> Assignment | None:
    now = timezone.now()
    # A paused or archived campaign, or a paused annotator: an error that says
    # why, which the rating page shows instead of "nothing left to rate".
    membership = membership_work_check(annotator=annotator, campaign=campaign, membership=membership)
    if campaign.status != Campaign.Status.ACTIVE:
        return None
    # The open round and my live leases in it, in one statement.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.id, a.id, a.comparison_id FROM (SELECT id FROM {Round._meta.db_table}"
            f" WHERE campaign_id = %s AND status = %s ORDER BY {connection.ops.quote_name('index')} DESC LIMIT 1) r"
            f" LEFT JOIN ({_A} a JOIN {_C} c ON c.id = a.comparison_id)"
            " ON c.round_id = r.id AND a.annotator_id = %s AND a.status = %s AND a.leased_until > %s"
            " ORDER BY a.leased_at",
            [campaign.pk, Round.Status.COLLECTING, annotator.pk, Assignment.Status.LEASED, _db_now(now)],
        )
        rows = cursor.fetchall()
    if not rows:
        return None
    round_id = rows[0][0]
    mine_live = [(pk, comparison_id) for _, pk, comparison_id in rows if pk is not None]
    mine = next(((pk, cid) for pk, cid in mine_live if cid not in exclude), None)
    if mine is not None:
        return Assignment.objects.get(pk=mine[0])
    held = len(mine_live)
    if exclude and held >= MAX_LIVE_LEASES:
        raise Conflict(
            f"You already hold {MAX_LIVE_LEASES} comparisons of this campaign; rate or skip one before asking for another."
        )
    membership_daily_limit_check(membership=membership, held=held)

    k = campaign.overlap
    skipped: list[int] = []
    for _ in range(20):
        # SKIP LOCKED: annotators asking at once each take a different row
        # instead of queueing on the same one. A locking scan keeps the rows
        # it locked and then skipped (their recheck failed: changed
        # meanwhile) locked to the end of the transaction; the first search
        # runs in a savepoint, so that the wait below can give them back first.
        savepoint = transaction.savepoint() if not skipped and connection.features.has_select_for_update else None
        comparison_id = _lease_candidate(round_id=round_id, k=k, annotator=annotator, now=now, exclude=exclude,
                                         skipped=skipped, lock=True)
        if savepoint is not None:
            (transaction.savepoint_commit if comparison_id is not None else transaction.savepoint_rollback)(savepoint)
        if comparison_id is None and not skipped:
            # Every candidate was locked by annotators leasing at the same
            # moment, which is not "no work": wait for the first one instead
            # of answering 204 while slots are free. Found without a lock,
            # then waited for alone, holding no row lock at all, so this wait
            # cannot close a cycle (waiting while holding rows did: two such
            # waits deadlocked in test_concurrency).
            first = _lease_candidate(round_id=round_id, k=k, annotator=annotator, now=now, exclude=exclude,
                                     skipped=(), lock=False)
            if first is not None:
                comparison_id = (
                    Comparison.objects.select_for_update(of=("self",)).filter(pk=first).values_list("pk", flat=True).first()
                )
        if comparison_id is None:
            return None
        # The row is locked now: count again, the first read may be stale.
        rating_count, others_live, _, _ = comparison_slots(comparison_id=comparison_id, annotator=annotator, now=now)
        if k - rating_count - others_live <= 0:
            skipped.append(comparison_id)
            continue
        until = now + timedelta(seconds=campaign.lease_ttl_seconds)
        # One upsert: the only row of mine it can meet is an expired lease
        # (done and released ones are not candidates, a live one came back above).
        (assignment,) = Assignment.objects.bulk_create(
            [Assignment(comparison_id=comparison_id, annotator=annotator, status=Assignment.Status.LEASED,
                        leased_at=now, leased_until=until)],
            update_conflicts=True, unique_fields=["comparison", "annotator"],
            update_fields=["status", "leased_at", "leased_until"],
        )
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

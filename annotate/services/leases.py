from collections.abc import Collection
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from annotate.errors import Conflict, ValidationFailed
from annotate.models import Lease, Campaign, Comparison, Membership, Round
from annotate.selectors.access import campaign_visibility_sql
from annotate.services.memberships import membership_daily_limit_check, membership_work_check

User = get_user_model()

# Live leases one annotator may hold in a campaign: the comparison on screen
# and the one the page prefetched, so the next appears at once after a submit.
MAX_LIVE_LEASES = 2


# The statements below run on every next and every rating. They are SQL, not
# ORM querysets: building them through the ORM cost more than running them
# (e.g. ~4 ms to build the candidate query, 0.2 ms to run the recheck that
# took 2 ms as a queryset; bench/load.py measures the whole loop). Each
# statement is also a round trip that costs CPU on both sides, so the lease
# takes as few as its locking allows: one read, the locking search, and the
# recheck and write together.
_C, _A = Comparison._meta.db_table, Lease._meta.db_table
# Live leases (leased, not expired) other annotators hold on comparison c
# (params: leased status, now, the annotator's id; services/ratings.py too).
LIVE_BY_OTHERS_SQL = (
    f"(SELECT COUNT(*) FROM {_A} o WHERE o.comparison_id = c.id AND o.status = %s"
    " AND o.leased_until > %s AND o.annotator_id <> %s)"
)
# What the lease reads of the campaign (in the model's field order, as
# Model.from_db wants them); any other field is loaded if something asks.
_CAMPAIGN_FIELDS = [f.attname for f in Campaign._meta.concrete_fields
                    if f.attname in {"id", "name", "overlap", "lease_ttl_seconds", "status"}]
_MEMBERSHIP_FIELDS = ["id", "status", "paused_reason", "paused_automatically", "daily_limit"]


def _not_in(column: str, ids: Collection[int]) -> tuple[str, list]:
    if not ids:
        return "", []
    return f" AND {column} NOT IN ({', '.join(['%s'] * len(ids))})", sorted(ids)


def _db_now(now):
    return connection.ops.adapt_datetimefield_value(now)


def _lease_start(
    *, annotator: User, campaign_id: int, visible_only: bool, now
) -> tuple[Campaign, Membership | None, int | None, list[tuple[int, int]]] | None:
    """In one statement: the campaign, the annotator's pool row (None outside
    the pool), the id of its open round (None if none) and the annotator's
    live leases in that round, oldest first, as (assignment id, comparison
    id). None when there is no such campaign, or (`visible_only`) when the
    annotator does not see it (selectors/access.py, campaigns_visible_to)."""
    clause, params = "", []
    if visible_only:
        visible = campaign_visibility_sql(user=annotator, campaign_column="k.id")
        if visible is None:
            return None
        clause, params = visible
    quote = connection.ops.quote_name
    sql = (
        f"SELECT {', '.join(f'k.{quote(name)}' for name in _CAMPAIGN_FIELDS)},"
        f" {', '.join(f'm.{quote(name)}' for name in _MEMBERSHIP_FIELDS)}, r.id, a.id, a.comparison_id"
        f" FROM {Campaign._meta.db_table} k LEFT JOIN {Membership._meta.db_table} m"
        " ON m.campaign_id = k.id AND m.annotator_id = %s"
        # The open round: the latest collecting one.
        f" LEFT JOIN {Round._meta.db_table} r ON r.id = (SELECT x.id FROM {Round._meta.db_table} x"
        f" WHERE x.campaign_id = %s AND x.status = %s ORDER BY x.{quote('index')} DESC LIMIT 1)"
        f" LEFT JOIN ({_A} a JOIN {_C} c ON c.id = a.comparison_id)"
        " ON c.round_id = r.id AND a.annotator_id = %s AND a.status = %s AND a.leased_until > %s"
        f" WHERE k.id = %s{clause} ORDER BY a.leased_at"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [annotator.pk, campaign_id, Round.Status.COLLECTING, annotator.pk,
                             Lease.Status.LEASED, _db_now(now), campaign_id, *params])
        rows = cursor.fetchall()
    if not rows:
        return None
    n = len(_CAMPAIGN_FIELDS)
    campaign = Campaign.from_db(connection.alias, _CAMPAIGN_FIELDS, rows[0][:n])
    membership = None
    m_id, m_status, m_reason, m_auto, m_limit = rows[0][n:n + 5]
    if m_id is not None:
        membership = Membership.from_db(
            connection.alias, ["id", "campaign_id", "annotator_id", *_MEMBERSHIP_FIELDS[1:]],
            [m_id, campaign.pk, annotator.pk, m_status, m_reason, bool(m_auto), m_limit],
        )
    round_id = rows[0][n + 5]
    return campaign, membership, round_id, [(row[-2], row[-1]) for row in rows if row[-2] is not None]


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
        f" AND {LIVE_BY_OTHERS_SQL} < %s - c.rating_count"
        " ORDER BY c.rating_count DESC, c.id LIMIT 1"
    )
    params += [annotator.pk, Lease.Status.DONE, Lease.Status.RELEASED,
               Lease.Status.LEASED, _db_now(now), annotator.pk, k]
    if lock and connection.features.has_select_for_update_skip_locked:
        sql += " FOR UPDATE OF c SKIP LOCKED"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


def _lease_insert(*, comparison_id: int, annotator: User, k: int, now, until) -> Lease | None:
    """Lease the comparison, whose row this transaction holds locked, if it
    still has a free slot; None if it has none. The recheck and the write
    are one statement: it starts after the lock was taken, so it counts the
    leases and ratings committed meanwhile (the locking search's own read
    may be stale). An upsert: the only row of mine it can meet is an
    expired lease (done and released ones are not candidates, a live one
    comes back before any search)."""
    sql = (
        f"INSERT INTO {_A} (comparison_id, annotator_id, status, leased_at, leased_until, skip_reason)"
        f" SELECT c.id, %s, %s, %s, %s, '' FROM {_C} c"
        f" WHERE c.id = %s AND c.rating_count + {LIVE_BY_OTHERS_SQL} < %s"
        " ON CONFLICT (comparison_id, annotator_id) DO UPDATE SET status = EXCLUDED.status,"
        " leased_at = EXCLUDED.leased_at, leased_until = EXCLUDED.leased_until RETURNING id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [annotator.pk, Lease.Status.LEASED, _db_now(now), _db_now(until), comparison_id,
                             Lease.Status.LEASED, _db_now(now), annotator.pk, k])
        row = cursor.fetchone()
    if row is None:
        return None
    assignment = Lease(id=row[0], comparison_id=comparison_id, annotator=annotator,
                            status=Lease.Status.LEASED, leased_at=now, leased_until=until)
    assignment._state.adding, assignment._state.db = False, connection.alias  # a row written, not a new one
    return assignment


class _WaitFor(Exception):
    """Every free comparison was locked by annotators leasing at the same
    moment: roll the lease's transaction back and wait for this one in a
    new one (see _comparison_lease)."""

    def __init__(self, comparison_id: int):
        super().__init__(comparison_id)
        self.comparison_id = comparison_id


def comparison_lease_next(*, annotator: User, campaign: Campaign, exclude: Collection[int] = ()) -> Lease | None:
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
    The campaign's status is read again with the lease, not taken from
    `campaign`.
    """
    found = _comparison_lease_or_wait(annotator=annotator, campaign_id=campaign.pk, visible_only=False,
                                      exclude={int(pk) for pk in exclude})
    return found[1] if found is not None else None


def comparison_lease_next_visible(
    *, annotator: User, campaign_id: int, exclude: Collection[int] = ()
) -> tuple[Campaign, Lease | None] | None:
    """comparison_lease_next for the next API: the campaign given by id, read
    in the lease's first statement with the annotator's pool row, if the
    annotator sees it (selectors/access.py, campaigns_visible_to); None if not, which
    the API answers with 404. Returns the campaign (the fields the lease
    reads; others load when asked) and the lease or None."""
    return _comparison_lease_or_wait(annotator=annotator, campaign_id=campaign_id, visible_only=True,
                                     exclude={int(pk) for pk in exclude})


def _comparison_lease_or_wait(**kwargs) -> tuple[Campaign, Lease | None] | None:
    try:
        return _comparison_lease(**kwargs, wait_for=None)
    except _WaitFor as wait:
        # Rolled back: the rows the locking scan kept locked are free again
        # (to the savepoint, where a caller's transaction surrounds this one).
        return _comparison_lease(**kwargs, wait_for=wait.comparison_id)


@transaction.atomic
def _comparison_lease(
    *, annotator: User, campaign_id: int, visible_only: bool, exclude: set[int], wait_for: int | None
) -> tuple[Campaign, Lease | None] | None:
    now = timezone.now()
    start = _lease_start(annotator=annotator, campaign_id=campaign_id, visible_only=visible_only, now=now)
    if start is None:
        return None
    campaign, membership, round_id, mine_live = start
    # A paused or archived campaign, or a paused annotator: an error that says
    # why, which the rating page shows instead of "nothing left to rate".
    membership = membership_work_check(annotator=annotator, campaign=campaign, membership=membership)
    if campaign.status != Campaign.Status.ACTIVE or round_id is None:
        return campaign, None
    mine = next(((pk, cid) for pk, cid in mine_live if cid not in exclude), None)
    if mine is not None:
        return campaign, Lease.objects.get(pk=mine[0])
    held = len(mine_live)
    if exclude and held >= MAX_LIVE_LEASES:
        raise Conflict(
            f"You already hold {MAX_LIVE_LEASES} comparisons of this campaign; rate or skip one before asking for another."
        )
    membership_daily_limit_check(membership=membership, held=held)

    k = campaign.overlap
    until = now + timedelta(seconds=campaign.lease_ttl_seconds)
    skipped: list[int] = []
    for _ in range(20):
        if wait_for is not None:
            # A retry after _WaitFor: this transaction holds no row lock yet,
            # so waiting here cannot close a cycle (waiting while holding
            # rows did: two such waits deadlocked in test_concurrency).
            comparison_id = (
                Comparison.objects.select_for_update(of=("self",)).filter(pk=wait_for).values_list("pk", flat=True).first()
            )
            wait_for = None
        else:
            # SKIP LOCKED: annotators asking at once each take a different
            # row instead of queueing on the same one.
            comparison_id = _lease_candidate(round_id=round_id, k=k, annotator=annotator, now=now, exclude=exclude,
                                             skipped=skipped, lock=True)
            if comparison_id is None and not skipped and connection.features.has_select_for_update_skip_locked:
                # Every candidate may be locked by annotators leasing at the
                # same moment, which is not "no work": look without locks
                # (which waits for nothing) and, if one is free, wait for it
                # instead of answering 204 while slots are free. But not in
                # this transaction: a locking scan keeps the rows it locked
                # and then skipped (their recheck failed: changed meanwhile)
                # locked to its end, so it rolls back first. Rare (the search
                # usually finds a row), so the common path pays for no
                # savepoint around the search.
                first = _lease_candidate(round_id=round_id, k=k, annotator=annotator, now=now, exclude=exclude,
                                         skipped=(), lock=False)
                if first is not None:
                    raise _WaitFor(first)
        if comparison_id is None:
            return campaign, None
        assignment = _lease_insert(comparison_id=comparison_id, annotator=annotator, k=k, now=now, until=until)
        if assignment is None:
            skipped.append(comparison_id)  # full by now
            continue
        return campaign, assignment
    return campaign, None


@transaction.atomic
def lease_renew(*, annotator: User, comparison_id: int) -> Lease:
    """Extend a live lease by the campaign's TTL (the page calls this while the
    annotator is active)."""
    now = timezone.now()
    assignment = (
        Lease.objects.select_for_update()
        .select_related("comparison__round__campaign")
        .filter(annotator=annotator, comparison_id=comparison_id)
        .first()
    )
    if assignment is None or assignment.status != Lease.Status.LEASED:
        raise Conflict("You hold no lease on this comparison; ask for the next one.")
    if assignment.leased_until <= now:
        raise Conflict("Your lease on this comparison expired and may have gone to someone else.")
    assignment.leased_until = now + timedelta(seconds=assignment.comparison.round.campaign.lease_ttl_seconds)
    assignment.save(update_fields=["leased_until"])
    return assignment


@transaction.atomic
def lease_skip(*, annotator: User, comparison_id: int, reason: str) -> Lease:
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
        Lease.objects.select_for_update().filter(annotator=annotator, comparison_id=comparison_id).first()
    )
    if assignment is None:
        raise Conflict(f"You hold no lease on comparison {comparison_id}, so there is nothing to skip.")
    if assignment.status == Lease.Status.DONE:
        raise Conflict(f"You already rated comparison {comparison_id}; a rating cannot be skipped.")
    if assignment.status == Lease.Status.RELEASED:
        raise Conflict(f"Comparison {comparison_id} was already given back (skipped or expired).")
    assignment.status = Lease.Status.RELEASED
    assignment.skip_reason = reason
    assignment.save(update_fields=["status", "skip_reason"])
    return assignment

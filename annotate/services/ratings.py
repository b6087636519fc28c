import json
import uuid
from functools import partial
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from annotate.errors import Conflict, NotFound, ValidationFailed
from annotate.models import Lease, Campaign, Comparison, Rating, Round
from annotate.selectors.access import campaign_visibility_sql
from annotate.services.aspects import rating_aspects_validate
from annotate.services.rating_form import rating_form_version
from annotate.services.leases import LIVE_BY_OTHERS_SQL

User = get_user_model()

STRENGTH_CHOICES = {Rating.Choice.A, Rating.Choice.B}


def rating_validate(*, choice: str, strength: int | None, reason: str, time_on_task_ms: int | None) -> None:
    if choice not in Rating.Choice.values:
        raise ValidationFailed(f"Unknown choice '{choice}'; use one of {', '.join(Rating.Choice.values)}.")
    if choice in STRENGTH_CHOICES:
        if strength is None:
            raise ValidationFailed("A rating of A or B needs a strength: 1 slightly, 2 clearly, 3 much better.")
        if strength not in (1, 2, 3):
            raise ValidationFailed(f"strength must be 1, 2 or 3, not {strength}.")
    elif strength is not None:
        raise ValidationFailed(f"strength applies only to A or B, not to '{choice}'; leave it out.")
    if len(reason) > settings.TEXT_MAX_CHARS:
        raise ValidationFailed(f"reason is {len(reason)} characters; the limit is {settings.TEXT_MAX_CHARS}.")
    if time_on_task_ms is not None and not (0 <= time_on_task_ms <= 24 * 3600 * 1000):
        raise ValidationFailed("time_on_task_ms must be between 0 and one day.")


def ranking_validate(*, ranking, k: int) -> list[list[int]]:
    """A k-set's ranking as sent: tie groups of display positions (1..k),
    best first, each position exactly once, e.g. [[2], [1, 3], [4]].
    Returns it cleaned (ints); a ValidationFailed that names the problem."""
    example = "e.g. [[2], [1, 3], [4]]: 2 best, 1 and 3 tied, 4 last"
    if not isinstance(ranking, list) or not ranking:
        raise ValidationFailed(f"ranking must be a list of tie groups of answer numbers, best first ({example}).")
    seen: list[int] = []
    clean = []
    for group in ranking:
        if not isinstance(group, list) or not group:
            raise ValidationFailed(f"Each tie group of ranking must be a non-empty list of answer numbers ({example}).")
        for position in group:
            if isinstance(position, bool) or not isinstance(position, int):
                raise ValidationFailed(f"ranking holds {position!r}; answer numbers are whole numbers 1..{k}.")
            if not 1 <= position <= k:
                raise ValidationFailed(f"ranking names answer {position}; this comparison has answers 1..{k}.")
            if position in seen:
                raise ValidationFailed(f"ranking names answer {position} twice; rank each of the {k} answers once.")
            seen.append(position)
        clean.append(list(group))
    missing = sorted(set(range(1, k + 1)) - set(seen))
    if missing:
        raise ValidationFailed(
            f"ranking leaves out answer{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))};"
            f" rank all {k} answers (ties allowed)."
        )
    return clean


def _submission_kind_check(*, choice: str, ranking, strength, demonstration, aspects) -> None:
    """A pair's choice or a k-set's ranking, not both, not neither; a
    ranking comes without strength, demonstration or aspects."""
    if ranking is None:
        if choice == Rating.Choice.RANKING:
            raise ValidationFailed("choice 'ranking' comes with a ranking (tie groups of answer numbers, best first).")
        if not choice:
            raise ValidationFailed("Send choice (a pair: A, B, tie, both_bad) or ranking (a k-set).")
        return
    if choice not in ("", Rating.Choice.RANKING):
        raise ValidationFailed(f"Send either choice '{choice}' (a pair) or ranking (a k-set), not both.")
    if strength is not None:
        raise ValidationFailed("strength applies only to a pair's A or B; a ranking has none, leave it out.")
    if demonstration is not None:
        raise ValidationFailed("A better answer (demonstration) goes with a pair's rating, not with a ranking.")
    if aspects:
        raise ValidationFailed(
            "Aspects go with a pair's rating, not with a ranking: a k-set is ranked whole; leave aspects out.",
            details={"aspects": "not with a ranking"},
        )


def _comparison_kind_check(*, comparison_id: int, k_set: int, ranking) -> None:
    """The submission fits the comparison: a ranking for a k-set, a choice for a pair."""
    if ranking is not None and not k_set:
        raise ValidationFailed(
            f"Comparison {comparison_id} is a pair: send choice (A, B, tie, both_bad), not a ranking."
        )
    if ranking is None and k_set:
        raise ValidationFailed(
            f"Comparison {comparison_id} is a set of {k_set} answers to rank: send ranking (tie groups of the"
            f" answer numbers 1..{k_set}, best first), not choice."
        )


class _LockedComparison(NamedTuple):
    id: int
    round_id: int
    gold_choice: str
    round_status: str
    round_index: int
    campaign_id: int
    overlap: int
    aspects: list  # the campaign's rubric aspects (services/aspects.py)
    aspects_required: bool
    answers: object  # the k-set's answer ids (a JSON string on SQLite); empty for a pair
    demonstrations: str  # the campaign's setting: off, optional, both_bad

    def form_version(self) -> str:
        return rating_form_version(aspects=self.aspects, aspects_required=self.aspects_required,
                                   demonstrations=self.demonstrations)

    @property
    def k_set(self) -> int:
        """The number of answers of a k-set; 0 for a pair."""
        answers = json.loads(self.answers) if isinstance(self.answers, str) else self.answers
        return len(answers or [])


def _comparison_locked(*, annotator: User, comparison_id: int) -> _LockedComparison | None:
    """The comparison, its round and campaign's overlap, its row locked, if
    it is in a campaign this annotator sees. One statement in SQL: as a
    queryset with the visibility subquery it cost more to build than to run
    (bench/load.py)."""
    visible = campaign_visibility_sql(user=annotator, campaign_column="r.campaign_id")
    if visible is None:
        return None
    clause, params = visible
    sql = (
        f"SELECT c.id, c.round_id, c.gold_choice, r.status, r.{connection.ops.quote_name('index')}, r.campaign_id,"
        f" k.overlap, k.aspects, k.aspects_required, c.answers, k.demonstrations FROM {Comparison._meta.db_table} c"
        f" JOIN {Round._meta.db_table} r ON r.id = c.round_id"
        f" JOIN {Campaign._meta.db_table} k ON k.id = r.campaign_id WHERE c.id = %s{clause}"
    )
    if connection.features.has_select_for_update_of:
        sql += " FOR UPDATE OF c"  # SQLite: the transaction holds the write lock instead (settings)
    with connection.cursor() as cursor:
        cursor.execute(sql, [comparison_id, *params])
        row = cursor.fetchone()
    if not row:
        return None
    aspects = json.loads(row[7]) if isinstance(row[7], str) else row[7]  # SQLite sends JSON as text
    return _LockedComparison(*row[:7], aspects or [], bool(row[8]), row[9], row[10])


class _MyState(NamedTuple):
    rating_count: int
    others_live: int
    assignment_id: int | None
    assignment_status: str | None
    key_rating_id: int | None  # the rating this idempotency key made, if any
    key_comparison_id: int | None
    rated: bool  # I rated this comparison already


def _my_state(*, annotator: User, comparison_id: int, db_key, now) -> _MyState:
    """What rating_create checks under the comparison's row lock, in one
    statement: its ratings and the live leases others hold on it, my lease
    on it, the rating this idempotency key made (a retry, or a twin request
    that committed while we waited for the lock) and whether I rated it."""
    r, a, c = Rating._meta.db_table, Lease._meta.db_table, Comparison._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.rating_count, {LIVE_BY_OTHERS_SQL}, m.id, m.status, kr.id, kr.comparison_id,"
            f" EXISTS (SELECT 1 FROM {r} x WHERE x.comparison_id = c.id AND x.annotator_id = %s)"
            f" FROM {c} c LEFT JOIN {a} m ON m.comparison_id = c.id AND m.annotator_id = %s"
            f" LEFT JOIN {r} kr ON kr.annotator_id = %s AND kr.idempotency_key = %s WHERE c.id = %s",
            [Lease.Status.LEASED, connection.ops.adapt_datetimefield_value(now), annotator.pk,
             annotator.pk, annotator.pk, annotator.pk, db_key, comparison_id],
        )
        row = cursor.fetchone()
    return _MyState(*row[:6], bool(row[6]))


def _rating_write(*, rating: Rating, db_key, assignment_id: int) -> None:
    """Store the rating, mark my lease done and count the rating on its
    comparison. PostgreSQL: one statement (writing CTEs, one round trip
    instead of three on the hot path); SQLite has no writing CTEs."""
    if connection.vendor != "postgresql":
        rating.save(force_insert=True)
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {Lease._meta.db_table} SET status = %s WHERE id = %s",
                           [Lease.Status.DONE, assignment_id])
            cursor.execute(f"UPDATE {Comparison._meta.db_table} SET rating_count = rating_count + 1 WHERE id = %s",
                           [rating.comparison_id])
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH r AS (INSERT INTO {Rating._meta.db_table} (comparison_id, annotator_id, choice, strength, reason,"
            " time_on_task_ms, aspects, idempotency_key, created_at, ranking)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"
            " RETURNING id),"
            f" a AS (UPDATE {Lease._meta.db_table} SET status = %s WHERE id = %s),"
            f" c AS (UPDATE {Comparison._meta.db_table} SET rating_count = rating_count + 1 WHERE id = %s)"
            " SELECT id FROM r",
            [rating.comparison_id, rating.annotator_id, rating.choice, rating.strength, rating.reason,
             rating.time_on_task_ms, json.dumps(rating.aspects), db_key,
             connection.ops.adapt_datetimefield_value(rating.created_at),
             None if rating.ranking is None else json.dumps(rating.ranking),
             Lease.Status.DONE, assignment_id, rating.comparison_id],
        )
        rating.pk = cursor.fetchone()[0]
    rating._state.adding, rating._state.db = False, connection.alias  # a row written, not a new one


@transaction.atomic
def rating_create(
    *,
    annotator: User,
    comparison_id: int,
    choice: str,
    idempotency_key: uuid.UUID,
    strength: int | None = None,
    reason: str = "",
    time_on_task_ms: int | None = None,
    demonstration: dict | None = None,
    aspects: dict | None = None,
    ranking: list | None = None,
    form: str | None = None,
) -> tuple[Rating, bool]:
    """Store one rating; returns (rating, created). The same idempotency key
    sent again returns the first rating and writes nothing. `demonstration`
    ({text, origin, time_on_task_ms}): a better answer written with it
    (services/demonstrations.py), stored with the rating or, if anything
    about either is refused, neither is. `aspects` ({name: "A" | "B" |
    "same"}): the rubric aspects judged with it (services/aspects.py), checked
    against the campaign's; a bad one refuses the whole rating. `ranking` (a
    k-set's, with choice "ranking" or empty): tie groups of its display
    positions, best first (ranking_validate); a ranking for a pair or a choice
    for a k-set is refused, and so are aspects with a ranking (aspects apply to
    pairs only). `form`: the rating form's version the page was built from
    (services/rating_form.py); when the campaign's form has changed since,
    the rating is stored as it was made, not refused for the new settings
    (`rating.form_changed` says so)."""
    _submission_kind_check(
        choice=choice, ranking=ranking, strength=strength, demonstration=demonstration, aspects=aspects
    )
    if ranking is not None:
        choice = Rating.Choice.RANKING
    rating_validate(choice=choice, strength=strength, reason=reason, time_on_task_ms=time_on_task_ms)
    clean_demo = None
    if demonstration is not None:
        from annotate.services.demonstrations import demonstration_validate

        clean_demo = demonstration_validate(demonstration=demonstration, choice=choice)

    def replay() -> Rating | None:
        earlier = Rating.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
        if earlier is not None and earlier.comparison_id != comparison_id:
            raise Conflict("This idempotency key was already used for another comparison; send a fresh key.")
        return earlier

    # Lock the comparison so two tabs (or two annotators) can't both take its
    # last slot; FOR UPDATE needs the surrounding transaction.
    comparison = _comparison_locked(annotator=annotator, comparison_id=comparison_id)
    if comparison is None:
        if (earlier := replay()) is not None:
            return earlier, False
        raise NotFound(f"No comparison {comparison_id} in your campaigns.")
    _comparison_kind_check(comparison_id=comparison_id, k_set=comparison.k_set, ranking=ranking)
    if ranking is not None:
        ranking = ranking_validate(ranking=ranking, k=comparison.k_set)
    # A page built before an admin changed the form: keep what was made.
    form_changed = bool(form) and form != comparison.form_version()
    # A k-set is ranked whole, without aspects (refused above), so a
    # campaign's required aspects ask nothing of it.
    clean_aspects = {} if comparison.k_set else rating_aspects_validate(
        aspects=aspects, campaign_aspects=comparison.aspects, required=comparison.aspects_required,
        form_changed=form_changed,
    )
    key = idempotency_key if isinstance(idempotency_key, uuid.UUID) else uuid.UUID(str(idempotency_key))
    db_key = Rating._meta.get_field("idempotency_key").get_db_prep_value(key, connection)
    now = timezone.now()
    # Under the lock, in one statement: everything the checks below need.
    mine = _my_state(annotator=annotator, comparison_id=comparison.id, db_key=db_key, now=now)
    if mine.key_rating_id is not None:
        if mine.key_comparison_id != comparison_id:
            raise Conflict("This idempotency key was already used for another comparison; send a fresh key.")
        return Rating.objects.get(pk=mine.key_rating_id), False
    if mine.rated:
        raise Conflict("You already rated this comparison; each annotator rates a comparison once.")
    if mine.assignment_id is None or mine.assignment_status != Lease.Status.LEASED:
        raise Conflict("You do not hold this comparison: ask for the next comparison and rate that one.")
    if comparison.round_status != Round.Status.COLLECTING:
        raise Conflict(f"Round {comparison.round_index} is closed ({comparison.round_status}); it takes no more ratings.")
    # rating_count is current: it was read under the row lock (SQLite: the
    # write lock IMMEDIATE takes at BEGIN), after any writer before us committed.
    rating_count = mine.rating_count
    if comparison.overlap - rating_count - mine.others_live <= 0:
        raise Conflict("Your lease expired and the comparison has all the ratings it needs; your rating was not stored.")
    if clean_demo is not None and not form_changed:
        # (Form changed: the page offered the editor, so the answer written
        # there is kept; it trains only if a reviewer accepts it.)
        from annotate.services.demonstrations import demonstration_campaign_check

        demonstration_campaign_check(campaign_setting=comparison.demonstrations, choice=choice)
    rating = Rating(
        comparison_id=comparison.id,
        annotator=annotator,
        choice=choice,
        strength=strength,
        ranking=ranking,
        reason=reason,
        time_on_task_ms=time_on_task_ms,
        aspects=clean_aspects,
        idempotency_key=key,
        created_at=now,
    )
    try:
        _rating_write(rating=rating, db_key=db_key, assignment_id=mine.assignment_id)
    except IntegrityError:
        # The same key sent at the same moment for another comparison (its
        # row lock is not ours): the database's unique key decides. No
        # savepoint is needed: the Conflict rolls this transaction back.
        raise Conflict("This idempotency key was already used for another comparison; send a fresh key.") from None
    if clean_demo is not None:
        from annotate.services.demonstrations import demonstration_write

        texts = Comparison.objects.values_list("response_a__text", "response_b__text").get(pk=comparison.id)
        origin_text = {"a": texts[0], "b": texts[1]}.get(clean_demo["origin"], "")
        demonstration_write(rating=rating, clean=clean_demo, origin_text=origin_text)
    if comparison.gold_choice:
        # A gold answer: pause the annotator now, in this transaction, if
        # their gold accuracy fell below the campaign's bar.
        from annotate.services.gold import gold_membership_check

        gold_membership_check(annotator=annotator, campaign=Campaign.objects.get(pk=comparison.campaign_id))
    rating.form_changed = form_changed
    if rating_count + 1 >= comparison.overlap:
        # This comparison is now full: the round may be complete.
        from annotate.services.rounds import round_progress_check_enqueue

        transaction.on_commit(
            partial(round_progress_check_enqueue, round_id=comparison.round_id, overlap=comparison.overlap)
        )
    return rating, True

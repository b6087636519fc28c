"""What an annotator is sent with a lease: the comparison, their own counts
and the round's (services/leases.py hands out the leases)."""
import json

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from annotate.models import Answer, Campaign, Comparison, Prompt, Rating, Round

User = get_user_model()


def annotator_progress(*, annotator: User, campaign: Campaign) -> dict:
    """{mine_today, mine_in_campaign}: the annotator's ratings today and in the campaign."""
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    # Both counts in one statement (the next API sends them with every lease).
    return Rating.objects.filter(annotator=annotator).aggregate(
        mine_today=Count("pk", filter=Q(created_at__gte=today)),
        mine_in_campaign=Count("pk", filter=Q(comparison__round__campaign=campaign)),
    )


def _truncated(metadata) -> bool:
    """Answer.metadata["truncated"], read from a raw row (a JSON string on SQLite, a dict on PostgreSQL)."""
    if isinstance(metadata, str):
        metadata = json.loads(metadata or "{}")
    return bool(isinstance(metadata, dict) and metadata.get("truncated") is True)


def annotator_progress_by_campaign(*, annotator: User, campaign_ids: list[int]) -> dict[int, dict]:
    """annotator_progress for many campaigns in one statement (the home
    page lists them all): {campaign id: {mine_today, mine_in_campaign}}.
    mine_today counts every campaign, as annotator_progress does."""
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    per_campaign = list(
        Rating.objects.filter(annotator=annotator)
        .values("comparison__round__campaign")
        .annotate(n=Count("pk"), today=Count("pk", filter=Q(created_at__gte=today)))
        .values_list("comparison__round__campaign", "n", "today")
    )
    mine_today = sum(today for _, _, today in per_campaign)
    counts = {campaign: n for campaign, n, _ in per_campaign}
    return {c: {"mine_today": mine_today, "mine_in_campaign": counts.get(c, 0)} for c in campaign_ids}


def _k_set_answers(ids) -> list[dict] | None:
    """A k-set's answers in display order as [{text, truncated}] (one more
    statement, for k-sets only); None for a pair."""
    if isinstance(ids, str):
        ids = json.loads(ids or "[]")
    if not ids:
        return None
    rows = {pk: (text, meta)
            for pk, text, meta in Answer.objects.filter(pk__in=ids).values_list("pk", "text", "metadata")}
    return [{"text": rows[pk][0], "truncated": _truncated(rows[pk][1])} for pk in ids]


def comparison_lease_payload(*, comparison_id: int, annotator: User, campaign: Campaign) -> dict:
    """What the next API sends with a lease, in one statement: the comparison
    (prompt, both answers, round index; a k-set's answers in one more), the annotator's counts
    (annotator_progress) and the round's (round_progress's counts). SQL: this
    runs on every next call, where three querysets cost more to build than
    to run (bench/load.py)."""
    t = {m.__name__: m._meta.db_table for m in (Comparison, Round, Prompt, Answer, Rating)}
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)  # as annotator_progress
    # Regular comparisons only, as round_progress: gold pairs never hold a round up.
    sql = (
        f"SELECT c.id, r.{connection.ops.quote_name('index')}, p.text, p.turns, ra.text, rb.text, ra.metadata, rb.metadata,"
        f" (SELECT COUNT(*) FROM {t['Rating']} x WHERE x.annotator_id = %s AND x.created_at >= %s),"
        f" (SELECT COUNT(*) FROM {t['Rating']} x JOIN {t['Comparison']} xc ON xc.id = x.comparison_id"
        f"  JOIN {t['Round']} xr ON xr.id = xc.round_id WHERE x.annotator_id = %s AND xr.campaign_id = %s),"
        " g.n, g.s, c.answers"
        f" FROM {t['Comparison']} c JOIN {t['Round']} r ON r.id = c.round_id JOIN {t['Prompt']} p ON p.id = c.prompt_id"
        f" JOIN {t['Answer']} ra ON ra.id = c.response_a_id JOIN {t['Answer']} rb ON rb.id = c.response_b_id"
        # Both round counts in one pass over the round.
        f" CROSS JOIN (SELECT COUNT(*) AS n, SUM(rating_count) AS s FROM {t['Comparison']}"
        f"  WHERE round_id = (SELECT round_id FROM {t['Comparison']} WHERE id = %s) AND gold_choice = '') g"
        " WHERE c.id = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [annotator.pk, connection.ops.adapt_datetimefield_value(today), annotator.pk, campaign.pk,
                             comparison_id, comparison_id])
        (cid, index, text, turns, a, b, meta_a, meta_b, mine_today, mine_in_campaign, comparisons, ratings,
         k_set) = cursor.fetchone()
    comparisons, ratings, k = comparisons or 0, int(ratings or 0), campaign.overlap
    return {
        "comparison": cid,
        "round": index,
        "prompt": text,
        "prompt_turns": json.loads(turns) if isinstance(turns, str) else turns,
        "response_a": a,
        "response_b": b,
        # Cut at the token limit (Answer.metadata["truncated"]): the page says so at the answer's end.
        "response_a_truncated": _truncated(meta_a),
        "response_b_truncated": _truncated(meta_b),
        "answers": _k_set_answers(k_set),
        "progress": {"mine_today": mine_today, "mine_in_campaign": mine_in_campaign},
        "round_progress": {
            "round": index,
            "comparisons": comparisons,
            "ratings": ratings,
            "target_ratings": comparisons * k,
            "fraction": (ratings / (comparisons * k)) if comparisons else 0.0,
        },
    }


def annotator_round_status(*, annotator: User, campaign: Campaign) -> dict:
    """What the rating page shows when it has nothing to rate, and polls
    (every ~12 s while visible) to learn when the next round opens: the
    campaign's status and whether a full round trains by itself, its current
    round's progress (round_progress), the annotator's own counts (today, in
    the campaign, in this round) and, while the round trains, the run's
    stage and how long it should take (round_training_eta)."""
    from annotate.selectors.rounds import campaign_current_round, round_progress
    from annotate.selectors.training import round_training_eta

    round_ = campaign_current_round(campaign=campaign)
    mine = annotator_progress(annotator=annotator, campaign=campaign)
    body = {"campaign": campaign.pk, "status": campaign.status, "auto_train": campaign.auto_train,
            "round": None, "training": None,
            "mine": {**mine, "mine_in_round": 0}}
    if round_ is None:
        return body
    body["round"] = round_progress(round_=round_)
    body["mine"]["mine_in_round"] = Rating.objects.filter(annotator=annotator, comparison__round=round_).count()
    if round_.status in (Round.Status.TRAINING, Round.Status.FAILED):
        body["training"] = round_training_eta(round_=round_)
    return body

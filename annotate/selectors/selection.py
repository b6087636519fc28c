"""Why each round's comparisons were chosen (docs/training.md, "Selection"):
per round, the strategy used, why it fell back, and how many comparisons
each reason brought with their scores; per comparison, its reason and score.
For admins and engineers only: the annotator API never sends any of it
(annotate/selectors/leases.py builds the rating payload field by field)."""
from django.db.models import Avg, Count, Max, Min, Q, QuerySet, Sum

from annotate.models import Campaign, Comparison, Round

# The order reasons are listed in (the strategies' first, then the rest).
REASONS = [reason.value for reason in Comparison.SelectionReason]
NOT_RECORDED = "not recorded"  # comparisons opened before selection was recorded (evaluation rounds')


def selection_reasons(*, round_ids: list[int]) -> dict[int, dict]:
    """{round pk: {reason: {"count", "score_min", "score_mean", "score_max"}}},
    in one query whatever the number of rounds. A reason no comparison of the
    round has is absent; scores are None where none was computed (random,
    exploration, gold, reference)."""
    order = {r: i for i, r in enumerate(REASONS)}
    out: dict[int, dict] = {pk: {} for pk in round_ids}
    rows = (
        Comparison.objects.filter(round_id__in=round_ids)
        .values("round_id", "selection_reason")
        .annotate(count=Count("pk"), score_min=Min("selection_score"), score_mean=Avg("selection_score"),
                  score_max=Max("selection_score"))
        .order_by()
    )
    for row in sorted(rows, key=lambda row: order.get(row["selection_reason"], len(order))):
        out[row["round_id"]][row["selection_reason"] or NOT_RECORDED] = {
            key: row[key] for key in ("count", "score_min", "score_mean", "score_max")
        }
    return out


def rounds_selection(*, campaign: Campaign, round_ids: list[int] | None = None) -> dict[int, dict]:
    """{round pk: {"strategy", "note", "reasons": selection_reasons' entry}}
    for the campaign's rounds (or those of `round_ids`), in two queries."""
    rounds = campaign.rounds.all() if round_ids is None else campaign.rounds.filter(pk__in=round_ids)
    rows = list(rounds.values_list("pk", "selection_strategy", "selection_note"))
    reasons = selection_reasons(round_ids=[pk for pk, _, _ in rows])
    return {pk: {"strategy": strategy, "note": note, "reasons": reasons[pk]} for pk, strategy, note in rows}


def campaign_rounds_selection(*, campaign: Campaign) -> list[dict]:
    """Every round, oldest first: round_progress's counts (regular comparisons)
    and rounds_selection's entry, in four queries whatever the number of rounds."""
    k = campaign.overlap
    rounds = list(campaign.rounds.order_by("index").values(
        "pk", "index", "status", "opened_at", "candidate__version", "baseline__version"))
    progress = {
        row["round_id"]: row
        for row in Comparison.objects.filter(round__campaign=campaign, gold_choice="")
        .values("round_id")
        .annotate(comparisons=Count("pk"), ratings=Sum("rating_count"), complete=Count("pk", filter=Q(rating_count__gte=k)))
        .order_by()
    }
    selection = rounds_selection(campaign=campaign)
    out = []
    for r in rounds:
        p = progress.get(r["pk"], {})
        out.append({
            "round": r["index"], "status": r["status"], "opened_at": r["opened_at"],
            "comparisons": p.get("comparisons", 0), "complete_comparisons": p.get("complete", 0),
            "ratings": p.get("ratings") or 0, "candidate_version": r["candidate__version"],
            "baseline_version": r["baseline__version"], "selection": selection[r["pk"]],
        })
    return out


def round_comparisons_selection(*, round_: Round) -> QuerySet:
    """The round's comparisons with why each was chosen, in lease order (pk)."""
    return (
        round_.comparisons.order_by("pk")
        .values("pk", "prompt_id", "prompt__external_id", "gold_choice", "candidate_is_a", "rating_count",
                "selection_reason", "selection_score")
    )


def selection_chart(*, rows: list[dict]) -> dict:
    """The overview's chart of picks by reason: x = round index, one series per
    reason seen in any round (its count of comparisons; 0 where the round had none)."""
    seen = [r for r in [*REASONS, NOT_RECORDED] if any(r in row["selection"]["reasons"] for row in rows)]
    return {
        "x": [row["round"] for row in rows],
        "series": {
            reason: [row["selection"]["reasons"].get(reason, {}).get("count", 0) for row in rows] for reason in seen
        },
    }

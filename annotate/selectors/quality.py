"""Data quality: agreement, Dawid-Skene consensus and each annotator's
reliability, the per-annotator table, and the reward-model sample weights
that reliability gives (annotator_weights, read by selectors/training.py).

The path from the API to the maths: annotate/apis/quality.py (the API) ->
this module (reads the ratings as numpy columns, one entry per rating) ->
annotate/stats/ (the statistics; no Django). The console's quality page
(frontend/console/data.py) reads campaign_quality_with_standing. The
leaderboard takes the same path through selectors/leaderboard.py."""
from collections import Counter

import numpy as np
from django.contrib.auth import get_user_model

from annotate.stats import agreement, consensus
from annotate.models import Campaign, Membership, Rating, Round
from annotate.selectors.aspects import aspects_quality
from annotate.selectors.memo import memoized, memoized_latest, ratings_state

User = get_user_model()


# An annotator needs this many ratings on comparisons someone else also rated
# (or on gold pairs) before Dawid-Skene's estimate of them is worth trusting;
# below it their weight is 1.0.
RELIABILITY_MIN_RATINGS = 20


def _rating_facts(*, campaign: Campaign, round_: Round | None = None) -> dict[str, np.ndarray]:
    """Every rating of the campaign (or one round) as numpy columns, one entry
    per rating, in rating id order: comparison, annotator, choice (index into
    agreement.CATEGORIES), strength (0: none), ms (time on task; see `timed`),
    timed (has a time on task), gold (the comparison's gold answer as an
    index into agreement.CATEGORIES; -1: not a gold pair). Columns, not rows:
    campaign_quality's statistics run on whole arrays, since a campaign has
    100,000 ratings and more and this is read inside a request."""
    # A pair's ratings: a k-set's rankings have their own figures (_ranking_agreement).
    ratings = Rating.objects.filter(comparison__round__campaign=campaign).exclude(choice=Rating.Choice.RANKING)
    if round_ is not None:
        ratings = ratings.filter(comparison__round=round_)
    rows = list(
        ratings.values_list(
            "pk", "comparison_id", "annotator_id", "choice", "strength", "time_on_task_ms", "comparison__gold_choice"
        )
    )
    pk, comparison, annotator, choice, strength, ms, gold = zip(*rows) if rows else [()] * 7
    code = {c: i for i, c in enumerate(agreement.CATEGORIES)}
    columns = {
        "comparison": np.array(comparison, dtype=np.int64),
        "annotator": np.array(annotator, dtype=np.int64),
        "choice": np.array([code[c] for c in choice], dtype=np.int64),
        "strength": np.array([s or 0 for s in strength], dtype=np.int64),
        "ms": np.array([m or 0 for m in ms], dtype=np.int64),
        "timed": np.array([m is not None for m in ms], dtype=bool),
        "gold": np.array([code.get(g, -1) for g in gold], dtype=np.int64),
    }
    # Sorted here rather than by the database: ORDER BY spills 100,000 rows
    # to disk there; the order only fixes floating-point summation order.
    order = np.argsort(np.array(pk, dtype=np.int64), kind="stable")
    return {name: column[order] for name, column in columns.items()}


def _ranking_agreement(*, campaign: Campaign, round_: Round | None) -> dict:
    """Krippendorff's alpha over the rankings of k-sets, ordinal: each
    answer of a k-set is a unit, and each annotator's value for it its rank
    in their ranking (1 best; tied answers share the mean of the ranks they
    span, e.g. two tied for first are 1.5 each). Ordinal rather than the
    implied pairs' agreement: a ranking is one ordinal judgement per answer,
    and its pairs are not independent units."""
    ratings = Rating.objects.filter(comparison__round__campaign=campaign, choice=Rating.Choice.RANKING)
    if round_ is not None:
        ratings = ratings.filter(comparison__round=round_)
    unit, value, n = [], [], 0
    for comparison_id, ranking in ratings.values_list("comparison_id", "ranking").iterator(chunk_size=5000):
        n += 1
        above = 0
        for group in ranking:
            for position in group:
                unit.append(comparison_id * 8 + position)  # k <= 4 < 8: one unit per (k-set, answer)
                value.append(above + (len(group) + 1) / 2)
            above += len(group)
    units = np.unique(np.array(unit, dtype=np.int64), return_counts=True)[1] if unit else np.array([])
    return {
        "n_rankings": n,
        "ranking_alpha": agreement.krippendorff_alpha_ordinal_ratings(unit, value) if unit else None,
        "ranking_alpha_units": int((units >= 2).sum()),
        "ranking_alpha_note": (
            "Krippendorff's alpha, ordinal, over rankings of k-sets: each answer of a k-set a unit, its value the "
            "rank an annotator gave it (1 best, tied answers the mean of the ranks they span)."
        ),
    }


def _reliability(facts: dict[str, np.ndarray]) -> tuple[consensus.DawidSkeneResult, np.ndarray, dict, dict]:
    """Dawid-Skene over the comparisons that two or more annotators rated, or
    that have a gold answer (a comparison rated once says nothing about its
    rater). Returns (result, which ratings it saw, informativeness of
    annotators with enough ratings, weight of every annotator in `facts`)."""
    comparison, annotator, choice = facts["comparison"], facts["annotator"], facts["choice"]
    _, per_comparison = np.unique(comparison, return_inverse=True)
    labelled = (np.bincount(per_comparison)[per_comparison] >= 2) | (facts["gold"] >= 0)
    result = consensus.dawid_skene_arrays(
        comparison[labelled], annotator[labelled], choice[labelled], gold=facts["gold"][labelled]
    )
    # result.workers is the sorted distinct annotators of the labels, as np.unique's.
    _, labelled_n = np.unique(annotator[labelled], return_counts=True)
    informativeness = {
        a: float(result.informativeness[i])
        for i, a in enumerate(result.workers)
        if labelled_n[i] >= RELIABILITY_MIN_RATINGS
    }
    annotators, per_annotator = np.unique(annotator, return_inverse=True)
    sided = np.isin(choice, [agreement.CATEGORIES.index(Rating.Choice.A), agreement.CATEGORIES.index(Rating.Choice.B)])
    trained_on = np.bincount(per_annotator, weights=sided, minlength=len(annotators))
    counts = {int(a): int(n) for a, n in zip(annotators, trained_on)}
    return result, labelled, informativeness, consensus.reliability_weights(informativeness, counts)


def annotator_weights(*, campaign: Campaign) -> dict[int, float]:
    """{annotator_id: reward-model sample weight}: Dawid-Skene reliability over
    every rating of the campaign, mean 1 over the A/B ratings; 1.0 for an
    annotator with too few overlapping ratings to judge. Memoized: it reads
    the ratings and their comparisons' gold choice alone, which
    ratings_state follows (selectors/memo.py)."""
    return memoized("weights", (ratings_state(campaign=campaign),),
                    lambda: _reliability(_rating_facts(campaign=campaign))[3])


def campaign_quality(*, campaign: Campaign, round_: Round | None = None, stale_ok: bool = False) -> dict:
    """Agreement, consensus and a per-annotator table over the campaign's
    ratings (or one round's); docs/quality.md explains each figure.
    Whole-array work throughout (bincounts per annotator), no loop over ratings.

    Memoized (selectors/memo.py). The key is complete: the statistics read
    the ratings (annotator, choice, strength, time on task) and their
    comparisons' gold choice, which ratings_state follows, and the round
    asked for; the usernames are read afresh on each call, and the pool
    standing (campaign_quality_with_standing) is not an input: a removed or
    paused annotator's ratings still count, as they did before. With
    `stale_ok` (the API, the quality page), a state not computed yet is
    answered with the previous result, `stale`, while a task computes it
    (memo.memoized_latest); `as_of` says which ratings count it is of."""
    state = ratings_state(campaign=campaign)
    round_id = round_.pk if round_ is not None else None
    # The aspects asked are an input too (the report has a section per aspect).
    aspects = tuple((a["name"], a["question"]) for a in campaign.aspects)
    report = memoized_latest("quality", state=state, params={"round": round_id}, key=(state, round_id, aspects),
                             compute=lambda: _quality(campaign, round_), stale_ok=stale_ok)
    rows = [*report["annotators"], *(row for aspect in report.get("aspects", []) for row in aspect["annotators"])]
    usernames = dict(User.objects.filter(pk__in={row["annotator_id"] for row in rows}).values_list("pk", "username"))
    for row in rows:
        row["username"] = usernames.get(row["annotator_id"], "")
    return report


def _quality(campaign: Campaign, round_: Round | None) -> dict:
    facts = _rating_facts(campaign=campaign, round_=round_)
    comparison, annotator, choice, gold = facts["comparison"], facts["annotator"], facts["choice"], facts["gold"]
    A, B, TIE, BOTH_BAD = range(len(agreement.CATEGORIES))
    ordinal = agreement.ordinal_values(choice, facts["strength"])
    on_scale = ~np.isnan(ordinal)
    _, on_scale_unit = np.unique(comparison[on_scale], return_inverse=True)
    agreeing, pairs = agreement.percent_agreement_ratings(comparison, choice)
    result, labelled, informativeness, weights = _reliability(facts)
    best = result.posteriors.argmax(axis=1)
    # The consensus category of each rating's comparison, where Dawid-Skene saw it.
    consensus_of = np.full(len(choice), -1)
    consensus_of[labelled] = best[np.searchsorted(result.items, comparison[labelled])]
    accuracy = {a: float(result.accuracy[i]) for i, a in enumerate(result.workers)}

    annotators, per_annotator = np.unique(annotator, return_inverse=True)
    n_annotators = len(annotators)

    def per_annotator_count(where: np.ndarray) -> list[int]:
        return np.bincount(per_annotator[where], minlength=n_annotators).tolist()

    n = per_annotator_count(np.ones(len(choice), dtype=bool))
    picked = {c: per_annotator_count(choice == c) for c in (A, B, TIE, BOTH_BAD)}
    gold_n, gold_right = per_annotator_count(gold >= 0), per_annotator_count((gold >= 0) & (choice == gold))
    consensus_n, consensus_right = per_annotator_count(labelled), per_annotator_count(labelled & (choice == consensus_of))
    median_ms = consensus.medians_by_group(per_annotator[facts["timed"]], facts["ms"][facts["timed"]], n_annotators)
    table = []
    for i, a in enumerate(annotators.tolist()):
        sided = picked[A][i] + picked[B][i]
        table.append(
            {
                "annotator_id": a,
                "username": "",  # filled by campaign_quality, outside the memo
                "n": n[i],
                "gold_n": gold_n[i],
                "gold_accuracy": gold_right[i] / gold_n[i] if gold_n[i] else None,
                "consensus_n": consensus_n[i],
                "consensus_agreement": consensus_right[i] / consensus_n[i] if consensus_n[i] else None,
                "left_pick_rate": picked[A][i] / sided if sided else None,
                "tie_rate": picked[TIE][i] / n[i],
                "both_bad_rate": picked[BOTH_BAD][i] / n[i],
                "median_seconds": median_ms[i] / 1000.0 if median_ms[i] is not None else None,
                "reliability": informativeness.get(a),
                "estimated_accuracy": accuracy.get(a) if a in informativeness else None,
                "weight": weights.get(a, 1.0),
            }
        )
    return {
        "campaign": campaign.pk,
        "round": round_.index if round_ is not None else None,
        "n_ratings": len(choice),
        "n_comparisons": len(np.unique(comparison)),
        "n_annotators": n_annotators,
        "alpha": agreement.krippendorff_alpha_ordinal_ratings(comparison, ordinal),
        "alpha_units": int((np.bincount(on_scale_unit) >= 2).sum()),
        "alpha_both_bad_missing": int((choice == BOTH_BAD).sum()),
        "alpha_note": (
            "Krippendorff's alpha, ordinal: A much/clearly/slightly better = -3/-2/-1, tie = 0, "
            "B slightly/clearly/much better = +1/+2/+3; both_bad is off that scale and counted as missing."
        ),
        "percent_agreement": agreeing,
        "agreement_pairs": pairs,
        "consensus_method": (
            "Dawid-Skene EM over A/B/tie/both_bad on comparisons rated by two or more annotators "
            "or with a gold answer (gold clamped)"
        ),
        "consensus_labels": dict(Counter(agreement.CATEGORIES[b] for b in best.tolist())),
        "annotators": table,
        # Each rubric aspect's A / B / same judgments, the same figures (selectors/aspects.py).
        "aspects": aspects_quality(campaign=campaign, round_=round_, min_ratings=RELIABILITY_MIN_RATINGS),
        **_ranking_agreement(campaign=campaign, round_=round_),
    }


def campaign_quality_with_standing(*, campaign: Campaign, round_: Round | None = None, stale_ok: bool = False) -> dict:
    """campaign_quality, each annotator's row with their standing in the pool
    under `membership` ({status, paused_reason, paused_automatically}; None
    for a rater outside the pool): what the console's quality page shows."""
    report = campaign_quality(campaign=campaign, round_=round_, stale_ok=stale_ok)
    standing = {
        m["annotator_id"]: m
        for m in Membership.objects.filter(campaign=campaign).values(
            "annotator_id", "status", "paused_reason", "paused_automatically"
        )
    }
    for row in report["annotators"]:
        row["membership"] = standing.get(row["annotator_id"])
    return report

"""Data quality per rubric aspect (docs/quality.md, "Aspects"): what
selectors/quality.py reports for the overall choice, for each aspect's
A / B / same judgments. The campaign quality report carries it under
`aspects` (selectors/quality.py calls aspects_quality inside its memo).

The same statistics as the overall choice's (annotate/stats/), on a
three-point scale: Krippendorff's alpha, ordinal, A better = -1, same = 0,
B better = +1; percent agreement; Dawid-Skene over A / B / same on the
comparisons two or more annotators judged on that aspect (aspects have no
gold answers)."""
from collections import Counter

import numpy as np
from django.db.models.fields.json import KeyTextTransform

from annotate.models import Campaign, Rating, Round
from annotate.stats import agreement, consensus

VALUES = ("A", "B", "same")  # the category indexes of the statistics
ORDINAL = np.array([-1.0, 1.0, 0.0])  # A, B, same on the ordinal scale


def aspect_facts(*, campaign: Campaign, name: str, round_: Round | None = None) -> dict[str, np.ndarray]:
    """The ratings that judged aspect `name` as numpy columns, one entry per
    rating in rating id order: comparison, annotator, value (index into
    VALUES). The database reads the judgment out of the JSON."""
    ratings = Rating.objects.filter(comparison__round__campaign=campaign, aspects__has_key=name)
    if round_ is not None:
        ratings = ratings.filter(comparison__round=round_)
    rows = list(ratings.annotate(judged=KeyTextTransform(name, "aspects"))
                .values_list("pk", "comparison_id", "annotator_id", "judged"))
    pk, comparison, annotator, judged = zip(*rows) if rows else [()] * 4
    code = {v: i for i, v in enumerate(VALUES)}
    order = np.argsort(np.array(pk, dtype=np.int64), kind="stable")
    return {
        "comparison": np.array(comparison, dtype=np.int64)[order],
        "annotator": np.array(annotator, dtype=np.int64)[order],
        "value": np.array([code[v] for v in judged], dtype=np.int64)[order],
    }


def aspect_quality(facts: dict[str, np.ndarray], *, min_ratings: int) -> dict:
    """Agreement, consensus and a per-annotator table for one aspect.
    `min_ratings`: labels on shared comparisons an annotator needs before
    their Dawid-Skene reliability is reported (selectors/quality.py's)."""
    comparison, annotator, value = facts["comparison"], facts["annotator"], facts["value"]
    A, B, SAME = range(len(VALUES))
    _, per_comparison = np.unique(comparison, return_inverse=True)
    labelled = np.bincount(per_comparison)[per_comparison] >= 2 if len(comparison) else np.zeros(0, dtype=bool)
    result = consensus.dawid_skene_arrays(comparison[labelled], annotator[labelled], value[labelled],
                                          categories=len(VALUES))
    best = result.posteriors.argmax(axis=1)
    consensus_of = np.full(len(value), -1)
    consensus_of[labelled] = best[np.searchsorted(result.items, comparison[labelled])]
    _, labelled_n = np.unique(annotator[labelled], return_counts=True)
    trusted = {a: i for i, a in enumerate(result.workers) if labelled_n[i] >= min_ratings}
    agreeing, pairs = agreement.percent_agreement_ratings(comparison, value)
    alpha_units = int((np.bincount(per_comparison) >= 2).sum()) if len(comparison) else 0

    annotators, per_annotator = np.unique(annotator, return_inverse=True)

    def count(where: np.ndarray) -> list[int]:
        return np.bincount(per_annotator[where], minlength=len(annotators)).tolist()

    n, picked_a, picked_b, picked_same = count(np.ones(len(value), dtype=bool)), count(value == A), \
        count(value == B), count(value == SAME)
    consensus_n, consensus_right = count(labelled), count(labelled & (value == consensus_of))
    table = []
    for i, a in enumerate(annotators.tolist()):
        sided = picked_a[i] + picked_b[i]
        j = trusted.get(a)
        table.append({
            "annotator_id": a,
            "n": n[i],
            "consensus_n": consensus_n[i],
            "consensus_agreement": consensus_right[i] / consensus_n[i] if consensus_n[i] else None,
            "left_pick_rate": picked_a[i] / sided if sided else None,
            "same_rate": picked_same[i] / n[i],
            "reliability": float(result.informativeness[j]) if j is not None else None,
            "estimated_accuracy": float(result.accuracy[j]) if j is not None else None,
        })
    return {
        "n_ratings": len(value),
        "n_comparisons": len(np.unique(comparison)),
        "alpha": agreement.krippendorff_alpha_ordinal_ratings(comparison, ORDINAL[value]) if len(value) else None,
        "alpha_units": alpha_units,
        "percent_agreement": agreeing,
        "agreement_pairs": pairs,
        "consensus_labels": dict(Counter(VALUES[b] for b in best.tolist())),
        "annotators": table,
    }


def aspects_quality(*, campaign: Campaign, round_: Round | None, min_ratings: int) -> list[dict]:
    """Each of the campaign's aspects, in its order: {name, question, and
    aspect_quality's figures}."""
    return [
        {"name": a["name"], "question": a["question"],
         **aspect_quality(aspect_facts(campaign=campaign, name=a["name"], round_=round_), min_ratings=min_ratings)}
        for a in campaign.aspects
    ]

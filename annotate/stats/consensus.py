"""Consensus and annotator reliability: Dawid–Skene over the four rating
categories, the reward-model sample weights it gives, and medians per
annotator (annotate/stats/__init__.py: the conventions)."""
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from annotate.stats.agreement import CATEGORIES


@dataclass
class DawidSkeneResult:
    items: list  # item ids, in the order of `posteriors`
    workers: list  # worker ids, in the order of `confusion` / `accuracy`
    posteriors: np.ndarray  # items x categories: P(true category | labels)
    confusion: np.ndarray  # workers x true x reported: P(reported | true)
    priors: np.ndarray  # categories: P(true category)
    accuracy: np.ndarray  # workers: P(reported == true), under the priors
    informativeness: np.ndarray  # workers: accuracy above chance, as Cohen's kappa against the truth
    iterations: int

    def consensus(self) -> dict:
        """{item: (category, confidence)}."""
        best = self.posteriors.argmax(axis=1)
        return {
            item: (CATEGORIES[best[i]], float(self.posteriors[i, best[i]])) for i, item in enumerate(self.items)
        }


def dawid_skene(
    labels: Sequence[tuple[Hashable, Hashable, str]],
    *,
    gold: dict | None = None,
    smoothing: float = 0.5,
    max_iterations: int = 100,
    tol: float = 1e-6,
) -> DawidSkeneResult:
    """Dawid-Skene EM over (item, worker, category) labels; items in `gold`
    ({item: category}) are clamped to their known answer. See dawid_skene_arrays,
    which this calls with the items and workers numbered in sorted order."""
    gold = gold or {}
    items = sorted({item for item, _, _ in labels}, key=_sort_key)
    workers = sorted({w for _, w, _ in labels}, key=_sort_key)
    item_ix = {item: i for i, item in enumerate(items)}
    worker_ix = {w: i for i, w in enumerate(workers)}
    category_ix = {c: i for i, c in enumerate(CATEGORIES)}
    result = dawid_skene_arrays(
        [item_ix[i] for i, _, _ in labels],
        [worker_ix[w] for _, w, _ in labels],
        [category_ix[c] for _, _, c in labels],
        gold=[category_ix.get(gold.get(i), -1) for i, _, _ in labels],
        smoothing=smoothing,
        max_iterations=max_iterations,
        tol=tol,
    )
    result.items, result.workers = items, workers
    return result


def dawid_skene_arrays(
    item: Sequence[int],
    worker: Sequence[int],
    category: Sequence[int],
    *,
    gold: Sequence[int] | None = None,
    smoothing: float = 0.5,
    max_iterations: int = 100,
    tol: float = 1e-6,
    categories: int | None = None,
) -> DawidSkeneResult:
    """Dawid-Skene EM: each annotator has a confusion matrix P(reported | true)
    over the four categories (A, B, tie, both_bad), or over `categories`
    categories numbered from 0 (a rubric aspect's A, B, same: 3); the true category of each
    item is latent. One entry per label: its item and worker (integer ids)
    and category (index into CATEGORIES). `gold`, per label, is the item's
    known category (index, -1 for none): such items are clamped to it, which
    anchors the confusion matrices. `smoothing` is a Dirichlet pseudo-count on
    every cell, so that a worker with few labels is not certain to be perfect.
    The result lists items and workers in ascending id order.

    Starts from the (soft) majority vote, so the labels' meaning is kept.
    Each EM step is a handful of whole-array operations (the sums over labels
    are np.bincount), so 100 iterations over 100,000 labels take well under a
    second."""
    k = len(CATEGORIES) if categories is None else categories
    item, worker = np.asarray(item, dtype=np.int64), np.asarray(worker, dtype=np.int64)
    lc = np.asarray(category, dtype=np.int64)
    if not len(item):
        empty = np.zeros((0, k))
        return DawidSkeneResult([], [], empty, np.zeros((0, k, k)), np.full(k, 1 / k), np.zeros(0), np.zeros(0), 0)
    items, li = np.unique(item, return_inverse=True)
    workers, lw = np.unique(worker, return_inverse=True)
    n_items, n_workers = len(items), len(workers)
    gold = np.full(len(li), -1) if gold is None else np.asarray(gold, dtype=np.int64)
    clamped = np.zeros(n_items, dtype=bool)
    clamped[li[gold >= 0]] = True
    clamped_to = np.zeros(n_items, dtype=np.int64)
    clamped_to[li[gold >= 0]] = gold[gold >= 0]
    clamped_to = clamped_to[clamped]

    def clamp(belief: np.ndarray) -> np.ndarray:
        if clamped.any():
            belief[:, clamped] = 0.0
            belief[clamped_to, np.flatnonzero(clamped)] = 1.0
        return belief

    # The beliefs are held categories-first (k x items): numpy reduces over a
    # short leading axis far faster than over a short last one; what is
    # gathered per label is labels x k (np.take of whole rows is the fast
    # gather). Flat bincount indices, computed once: label l adds its item's
    # belief in true category t to cell (worker, t, reported) in the M-step,
    # and log P(reported | t) to cell (t, item) in the E-step.
    true = np.arange(k)
    confusion_cell = ((lw[:, None] * k + true) * k + lc[:, None]).ravel()
    item_cell = (true * n_items + li[:, None]).ravel()
    reported_cell = lw * k + lc  # row of the (worker, reported) x true table

    # init: majority vote
    belief = np.bincount(lc * n_items + li, minlength=k * n_items).reshape(k, n_items).astype(float)
    belief = clamp(belief / belief.sum(axis=0))

    iteration = 0
    for iteration in range(1, max_iterations + 1):
        # M-step: class priors and each worker's confusion matrix
        priors = (belief.sum(axis=1) + smoothing) / (n_items + k * smoothing)
        confusion = smoothing + np.bincount(
            confusion_cell, weights=np.take(belief.T, li, axis=0).ravel(), minlength=n_workers * k * k
        ).reshape(n_workers, k, k)
        confusion /= confusion.sum(axis=2, keepdims=True)
        # E-step: posterior of each item's true category given all its labels
        log_likelihood = np.log(confusion).transpose(0, 2, 1).reshape(n_workers * k, k)
        log_post = np.log(priors)[:, None] + np.bincount(
            item_cell, weights=np.take(log_likelihood, reported_cell, axis=0).ravel(), minlength=k * n_items
        ).reshape(k, n_items)
        log_post -= log_post.max(axis=0)
        updated = np.exp(log_post)
        updated = clamp(updated / updated.sum(axis=0))
        change = np.abs(updated - belief).max()
        belief = updated
        if change < tol:
            break

    posteriors = np.ascontiguousarray(belief.T)
    accuracy = np.einsum("k,wkk->w", priors, confusion)
    # Chance agreement of a worker with the truth: P(true = c) * P(worker says c).
    reported = np.einsum("k,wkc->wc", priors, confusion)
    chance = (reported * priors).sum(axis=1)
    informativeness = (accuracy - chance) / np.maximum(1.0 - chance, 1e-9)
    return DawidSkeneResult(
        items.tolist(), workers.tolist(), posteriors, confusion, priors, accuracy, informativeness, iteration
    )


def reliability_weights(informativeness: dict, counts: dict, *, floor: float = 0.05) -> dict:
    """Reward-model sample weights from Dawid-Skene informativeness (kappa
    against the consensus truth: 0 for an annotator who answers at random, 1
    for a perfect one). `counts` is {annotator: labels that will be trained
    on}. Annotators absent from `informativeness` (too few labels to judge)
    get 1.0. The others get max(kappa, floor), rescaled so that their mean
    weight per trained-on label is 1; the mean over every label is then 1 too."""
    judged = {w: max(float(informativeness[w]), floor) for w in counts if w in informativeness}
    total = sum(counts[w] for w in judged)
    weighted = sum(judged[w] * counts[w] for w in judged)
    scale = total / weighted if weighted > 0 else 1.0
    return {w: (judged[w] * scale if w in judged else 1.0) for w in counts}


def medians_by_group(group: np.ndarray, values: np.ndarray, groups: int) -> list[float | None]:
    """The median of `values` in each group 0..groups-1 (None for an empty
    one), as statistics.median: the middle value, or the mean of the two."""
    order = np.lexsort((values, group))
    ordered = values[order]
    size = np.bincount(group, minlength=groups)
    start = np.cumsum(size) - size
    medians = []
    for s, m in zip(start.tolist(), size.tolist()):
        if not m:
            medians.append(None)
        elif m % 2:
            medians.append(int(ordered[s + m // 2]))
        else:
            medians.append((int(ordered[s + m // 2 - 1]) + int(ordered[s + m // 2])) / 2)
    return medians


def _sort_key(x):
    return (str(type(x)), x)

"""The numbers behind data quality and the leaderboard, as plain functions over
plain lists: no ORM, no Django. annotate/selectors.py gathers the rows and
calls these; the tests check them against independent implementations
(`krippendorff`, `choix`).

- `ordinal_value`, `krippendorff_alpha_ordinal`, `percent_agreement`:
  inter-annotator agreement.
- `dawid_skene`: consensus labels and per-annotator reliability (Dawid & Skene
  1979, EM over the four categories), and `reliability_weights`, which turns
  reliability into reward-model sample weights.
- `bradley_terry`, `bradley_terry_bootstrap`: model strengths from pairwise
  outcomes with percentile intervals (as Chatbot Arena reports them).
- `wilson_interval`: a win rate's 95% interval.
"""
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import combinations
from math import log, sqrt

import numpy as np

CATEGORIES = ("A", "B", "tie", "both_bad")
# Elo-like display scale, as Chatbot Arena prints Bradley-Terry scores: a
# 400-point gap means 10:1 odds of winning, the mean version sits at 1000.
ELO_SCALE = 400.0 / log(10.0)
ELO_BASE = 1000.0


# --- agreement ---------------------------------------------------------------


def ordinal_value(choice: str, strength: int | None) -> int | None:
    """The rating on the ordinal scale A-much-better (-3) .. tie (0) ..
    B-much-better (+3). both_bad is not on that scale: None (missing)."""
    if choice == "A":
        return -int(strength or 1)
    if choice == "B":
        return int(strength or 1)
    if choice == "tie":
        return 0
    return None


def krippendorff_alpha_ordinal(units: Sequence[Sequence[float]]) -> float | None:
    """Krippendorff's alpha, ordinal metric. `units` holds, per unit (a
    comparison), the values its annotators gave; missing values are simply
    left out. Units with fewer than two values are not pairable and ignored.
    None when alpha is undefined (no pairable unit, or a single value used)."""
    pairable = [list(u) for u in units if len(u) >= 2]
    if not pairable:
        return None
    domain = sorted({v for u in pairable for v in u})
    if len(domain) < 2:
        return None
    index = {v: i for i, v in enumerate(domain)}
    size = len(domain)
    # Coincidence matrix: each ordered pair of values within a unit, weighted 1/(m_u - 1).
    coincidences = np.zeros((size, size))
    for unit in pairable:
        counts = np.zeros(size)
        for v in unit:
            counts[index[v]] += 1
        coincidences += (np.outer(counts, counts) - np.diag(counts)) / (len(unit) - 1)
    n_v = coincidences.sum(axis=1)
    n = n_v.sum()
    # Ordinal distance: (values between c and k, counting the ends by half)^2.
    cumulative = np.concatenate([[0.0], np.cumsum(n_v)])
    lo, hi = np.minimum.outer(np.arange(size), np.arange(size)), np.maximum.outer(np.arange(size), np.arange(size))
    delta = (cumulative[hi + 1] - cumulative[lo] - (n_v[lo] + n_v[hi]) / 2.0) ** 2
    observed = (coincidences * delta).sum()
    expected = (np.outer(n_v, n_v) * delta).sum() / (n - 1)
    if expected == 0:
        return None
    return float(1.0 - observed / expected)


def percent_agreement(units: Sequence[Sequence[Hashable]]) -> tuple[float | None, int]:
    """Share of annotator pairs on the same unit that gave the same category,
    pooled over every pair of every unit (a unit rated by k annotators adds
    k(k-1)/2 pairs). Returns (share, number of pairs); share is None with no pairs."""
    agree = pairs = 0
    for unit in units:
        for x, y in combinations(unit, 2):
            pairs += 1
            agree += x == y
    return (agree / pairs if pairs else None), pairs


# --- consensus and annotator reliability --------------------------------------


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
    """Dawid-Skene EM: each annotator has a confusion matrix P(reported | true)
    over the four categories (A, B, tie, both_bad); the true category of each
    item is latent. `labels` are (item, worker, category). Items in `gold`
    ({item: category}) are clamped to their known answer, which anchors the
    confusion matrices. `smoothing` is a Dirichlet pseudo-count on every cell,
    so that a worker with few labels is not certain to be perfect.

    Starts from the (soft) majority vote, so the labels' meaning is kept."""
    gold = gold or {}
    items = sorted({item for item, _, _ in labels}, key=_sort_key)
    workers = sorted({w for _, w, _ in labels}, key=_sort_key)
    k = len(CATEGORIES)
    if not labels:
        empty = np.zeros((0, k))
        return DawidSkeneResult([], [], empty, np.zeros((0, k, k)), np.full(k, 1 / k), np.zeros(0), np.zeros(0), 0)
    item_ix = {item: i for i, item in enumerate(items)}
    worker_ix = {w: i for i, w in enumerate(workers)}
    category_ix = {c: i for i, c in enumerate(CATEGORIES)}
    li = np.array([item_ix[i] for i, _, _ in labels])
    lw = np.array([worker_ix[w] for _, w, _ in labels])
    lc = np.array([category_ix[c] for _, _, c in labels])
    clamped = np.array([i for i, item in enumerate(items) if gold.get(item) in category_ix], dtype=int)
    clamped_to = np.array([category_ix[gold[items[i]]] for i in clamped], dtype=int)

    def clamp(posteriors: np.ndarray) -> np.ndarray:
        if len(clamped):
            posteriors[clamped] = 0.0
            posteriors[clamped, clamped_to] = 1.0
        return posteriors

    # init: majority vote
    posteriors = np.zeros((len(items), k))
    np.add.at(posteriors, (li, lc), 1.0)
    posteriors = clamp(posteriors / posteriors.sum(axis=1, keepdims=True))

    iteration = 0
    for iteration in range(1, max_iterations + 1):
        # M-step: class priors and each worker's confusion matrix
        priors = (posteriors.sum(axis=0) + smoothing) / (len(items) + k * smoothing)
        confusion = np.full((len(workers), k, k), smoothing)
        for true in range(k):
            np.add.at(confusion[:, true, :], (lw, lc), posteriors[li, true])
        confusion /= confusion.sum(axis=2, keepdims=True)
        # E-step: posterior of each item's true category given all its labels
        log_post = np.tile(np.log(priors), (len(items), 1))
        np.add.at(log_post, li, np.log(confusion[lw, :, lc]))
        log_post -= log_post.max(axis=1, keepdims=True)
        updated = np.exp(log_post)
        updated = clamp(updated / updated.sum(axis=1, keepdims=True))
        change = np.abs(updated - posteriors).max()
        posteriors = updated
        if change < tol:
            break

    accuracy = np.einsum("k,wkk->w", priors, confusion)
    # Chance agreement of a worker with the truth: P(true = c) * P(worker says c).
    reported = np.einsum("k,wkc->wc", priors, confusion)
    chance = (reported * priors).sum(axis=1)
    informativeness = (accuracy - chance) / np.maximum(1.0 - chance, 1e-9)
    return DawidSkeneResult(
        items, workers, posteriors, confusion, priors, accuracy, informativeness, iteration
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


# --- Bradley-Terry -------------------------------------------------------------


def outcomes_matrix(outcomes: Sequence[tuple[int, int, float]], n: int, counts: np.ndarray | None = None) -> np.ndarray:
    """wins[i, j] = (fractional) wins of i over j, from (i, j, score of i) rows:
    score 1 a win of i, 0 a win of j, 0.5 half a win each. `counts` repeats
    each row that many times (for bootstrap resamples)."""
    wins = np.zeros((n, n))
    if not len(outcomes):
        return wins
    rows = np.asarray(outcomes, dtype=float)
    i, j, s = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2]
    c = np.ones(len(rows)) if counts is None else counts
    np.add.at(wins, (i, j), c * s)
    np.add.at(wins, (j, i), c * (1.0 - s))
    return wins


def bradley_terry(wins: np.ndarray, *, penalty: float = 1e-3, max_iterations: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Log-strengths theta maximising sum W_ij log sigmoid(theta_i - theta_j)
    - penalty * |theta|^2 (choix.opt_pairwise's objective), by Newton's method
    with step halving. The small ridge keeps a version that never lost finite;
    theta is centred to mean zero (the likelihood only sees differences)."""
    n = wins.shape[0]
    theta = np.zeros(n)
    games = wins + wins.T

    def objective(t: np.ndarray) -> float:
        diff = t[:, None] - t[None, :]
        return float((wins * np.logaddexp(0.0, -diff)).sum() + penalty * (t**2).sum())

    current = objective(theta)
    for _ in range(max_iterations):
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
        grad = (wins - games * p).sum(axis=1) - 2 * penalty * theta
        curvature = games * p * (1 - p)
        hessian = curvature - np.diag(curvature.sum(axis=1)) - 2 * penalty * np.eye(n)
        # lstsq: without a penalty the Hessian is singular along (1, ..., 1),
        # and the minimum-norm step leaves the mean where it is.
        step = np.linalg.lstsq(hessian, grad, rcond=None)[0]
        size = 1.0
        while size > 1e-6 and objective(theta - size * step) > current + 1e-12:
            size /= 2
        theta = theta - size * step
        current = objective(theta)
        if np.abs(size * step).max() < tol:
            break
    return theta - theta.mean()


def bradley_terry_bootstrap(
    outcomes: Sequence[tuple[int, int, float]],
    n: int,
    *,
    resamples: int = 200,
    seed: int = 0,
    penalty: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(theta, lower, upper): the fit on every outcome and the 2.5 / 97.5
    percentiles of refits on `resamples` resamples of the outcomes drawn with
    replacement. Drawing how often each distinct outcome row appears from a
    multinomial is the same resample as drawing rows, only faster."""
    theta = bradley_terry(outcomes_matrix(outcomes, n), penalty=penalty)
    if not len(outcomes) or resamples <= 0:
        return theta, theta.copy(), theta.copy()
    distinct, multiplicity = np.unique(np.asarray(outcomes, dtype=float), axis=0, return_counts=True)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(outcomes), multiplicity / multiplicity.sum(), size=resamples)
    fits = np.stack([bradley_terry(outcomes_matrix(distinct, n, counts=d), penalty=penalty) for d in draws])
    lower, upper = np.percentile(fits, [2.5, 97.5], axis=0)
    return theta, lower, upper


def wilson_interval(wins: float, n: float, z: float = 1.96) -> tuple[float, float] | tuple[None, None]:
    """Wilson score interval of a proportion (ties counted as half a win)."""
    if n <= 0:
        return None, None
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _sort_key(x):
    return (str(type(x)), x)

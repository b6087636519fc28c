"""Ranking models from pairwise outcomes: Bradley–Terry strengths with
percentile bootstrap intervals, and the same with a style covariate (the
answers' length difference, as Chatbot Arena's style control), on an
Elo-like display scale (annotate/stats/__init__.py: the conventions).
"""
from collections.abc import Sequence
from dataclasses import dataclass
from math import log

import numpy as np

# Elo-like display scale, as Chatbot Arena prints Bradley-Terry scores: a
# 400-point gap means 10:1 odds of winning, the mean version sits at 1000.
ELO_SCALE = 400.0 / log(10.0)
ELO_BASE = 1000.0


def implied_pairs(ranking: Sequence[Sequence[int]], k: int):
    """A ranking of k answers (tie groups of positions 1..k, best first) as
    its k(k-1)/2 implied pairs (x, y, score of x: 1, 0.5 tied, 0), x < y,
    each of weight 2/k: under Plackett-Luce a ranking is k-1 successive
    choices, so its pairs weigh k-1 judgements in all, not k(k-1)/2
    independent ones. The leaderboard and the overview read rankings so."""
    place = {p: g for g, group in enumerate(ranking) for p in group}
    for x in range(1, k + 1):
        for y in range(x + 1, k + 1):
            yield x, y, 0.5 if place[x] == place[y] else float(place[x] < place[y])


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
    return bradley_terry_many(wins[None], penalty=penalty, max_iterations=max_iterations, tol=tol)[0]


def bradley_terry_many(
    wins: np.ndarray, *, penalty: float = 1e-3, max_iterations: int = 100, tol: float = 1e-10,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """bradley_terry on a stack of win matrices (fits x n x n) at once: the
    same Newton iterations, step halving and stopping rule for each fit, run
    side by side on arrays, so that 200 bootstrap refits cost about as much
    as one. From `start` (n log-strengths; default zeros). Returns fits x n."""
    fits, n = wins.shape[0], wins.shape[1]
    theta = np.zeros((fits, n)) if start is None else np.tile(np.asarray(start, dtype=float), (fits, 1))
    if n == 0:
        # A campaign with no policy version yet: nothing to fit (the loop
        # below would take the max of an empty step).
        return theta
    games = wins + wins.transpose(0, 2, 1)
    # lstsq's cut-off for small singular values: without a penalty the
    # Hessian is singular along (1, ..., 1), and the minimum-norm step (the
    # pseudo-inverse's, which, unlike lstsq, works on a stack) leaves the
    # mean where it is.
    cutoff = np.finfo(float).eps * n

    def objective(t: np.ndarray, w: np.ndarray) -> np.ndarray:
        diff = t[:, :, None] - t[:, None, :]
        return (w * np.logaddexp(0.0, -diff)).sum(axis=(1, 2)) + penalty * (t**2).sum(axis=1)

    current = objective(theta, wins)
    active = np.arange(fits)  # fits still iterating
    for _ in range(max_iterations):
        if not len(active):
            break
        t, w, g = theta[active], wins[active], games[active]
        p = 1.0 / (1.0 + np.exp(-(t[:, :, None] - t[:, None, :])))
        grad = (w - g * p).sum(axis=2) - 2 * penalty * t
        curvature = g * p * (1 - p)
        hessian = curvature - curvature.sum(axis=2)[:, :, None] * np.eye(n) - 2 * penalty * np.eye(n)
        if penalty > 0:
            # The ridge makes the Hessian definite: a solve, several times
            # cheaper than the pseudo-inverse's SVD (bench/RESULTS.md, issue 17).
            step = np.linalg.solve(hessian, grad[:, :, None])[:, :, 0]
        else:
            step = (np.linalg.pinv(hessian, rcond=cutoff) @ grad[:, :, None])[:, :, 0]
        size = np.ones(len(active))
        # Halve each fit's step until it does not make the objective worse.
        while True:
            worse = (size > 1e-6) & (objective(t - size[:, None] * step, w) > current[active] + 1e-12)
            if not worse.any():
                break
            size[worse] /= 2
        theta[active] = t - size[:, None] * step
        current[active] = objective(theta[active], w)
        active = active[np.abs(size[:, None] * step).max(axis=1) >= tol]
    return theta - theta.mean(axis=1, keepdims=True)


def bradley_terry_bootstrap(
    outcomes: Sequence[tuple[int, int, float]],
    n: int,
    *,
    counts: Sequence[int] | None = None,
    resamples: int = 200,
    seed: int = 0,
    penalty: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(theta, lower, upper): the fit on every outcome and the 2.5 / 97.5
    percentiles of refits on `resamples` resamples of the outcomes drawn with
    replacement. `counts` says how many ratings each outcome row stands for
    (default one each), so callers can pass outcomes already tallied.
    Drawing how often each distinct outcome row appears from a multinomial
    is the same resample as drawing rows, only faster; and the refits run
    side by side (bradley_terry_many)."""
    rows = np.asarray(outcomes, dtype=float).reshape(-1, 3)
    weight = np.ones(len(rows)) if counts is None else np.asarray(counts, dtype=float)
    if not len(rows):
        theta = bradley_terry(np.zeros((n, n)), penalty=penalty)
        return theta, theta.copy(), theta.copy()
    distinct, inverse = np.unique(rows, axis=0, return_inverse=True)
    multiplicity = np.bincount(inverse.ravel(), weights=weight, minlength=len(distinct))
    theta = bradley_terry(outcomes_matrix(distinct, n, counts=multiplicity), penalty=penalty)
    if resamples <= 0:
        return theta, theta.copy(), theta.copy()
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(int(multiplicity.sum()), multiplicity / multiplicity.sum(), size=resamples)
    # Each distinct row's own win matrix; a resample's is their count-weighted sum.
    per_row = np.stack([outcomes_matrix(distinct[d : d + 1], n) for d in range(len(distinct))])
    # The refits start from the full fit, which each resample is close to:
    # from zero, a long chain of versions (each compared with its neighbours
    # only) took Newton many steps with halving, each a pseudo-inverse of
    # 200 n x n Hessians (bench/RESULTS.md, issue 17).
    fits = bradley_terry_many(np.tensordot(draws.astype(float), per_row, axes=1), penalty=penalty, start=theta)
    lower, upper = np.percentile(fits, [2.5, 97.5], axis=0)
    return theta, lower, upper


# --- Bradley-Terry with a style covariate (length control) ----------------------


def length_feature(len_a: np.ndarray, len_b: np.ndarray) -> np.ndarray:
    """The normalised length difference (len_a - len_b) / (len_a + len_b), in
    -1..1, as Chatbot Arena's style control normalises it (0 where both
    answers are empty)."""
    len_a, len_b = np.asarray(len_a, dtype=float), np.asarray(len_b, dtype=float)
    total = len_a + len_b
    return np.divide(len_a - len_b, total, out=np.zeros_like(total), where=total > 0)


def standardised(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x - mean over std, both weighted (one weight per rating a row stands
    for), so that the fitted coefficient is per standard deviation; a column
    with no spread is all zeros (its coefficient then stays 0)."""
    x, weights = np.asarray(x, dtype=float), np.asarray(weights, dtype=float)
    if not len(x) or weights.sum() <= 0:
        return np.zeros_like(x)
    mean = np.average(x, weights=weights)
    std = np.sqrt(np.average((x - mean) ** 2, weights=weights))
    return (x - mean) / std if std > 1e-12 else np.zeros_like(x)


def logistic_fit_many(
    design: np.ndarray, wins: np.ndarray, games: np.ndarray, *, penalty: float = 1e-3,
    start: np.ndarray | None = None, max_iterations: int = 100, tol: float = 1e-10,
) -> np.ndarray:
    """Ridge logistic regression without intercept, for a stack of weightings
    of the same rows at once (fits x rows `wins` and `games`). Row r of fit f
    stands for games[f, r] ratings with design row x_r, wins[f, r] of them
    outcome 1 (a tie counts half to each side, so wins may be fractional).
    Minimises sum_r games * log(1 + e^z) - wins * z + penalty * |beta|^2,
    z = x_r . beta: the same as a weighted binary logistic regression with
    each row split into an outcome-1 row of weight `wins` and an outcome-0
    row of weight `games - wins` and an L2 penalty of C = 1 / (2 penalty).
    Newton's method with step halving, as bradley_terry_many, from `start`
    (columns; default zeros). Returns fits x columns."""
    design = np.asarray(design, dtype=float)
    wins, games = np.atleast_2d(wins).astype(float), np.atleast_2d(games).astype(float)
    fits, d = wins.shape[0], design.shape[1]
    beta = np.zeros((fits, d)) if start is None else np.tile(np.asarray(start, dtype=float), (fits, 1))
    if d == 0 or not design.shape[0]:
        return beta
    # Each row's outer product x x^T, flattened: a fit's Hessian is then one
    # matrix product of its curvatures with these (fits x rows @ rows x d^2).
    outer = (design[:, :, None] * design[:, None, :]).reshape(len(design), d * d)
    ridge = 2 * penalty * np.eye(d)

    def evaluate(b: np.ndarray, w: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(objective, sigmoid(z)) from one exp and one log1p per entry: the
        elementwise functions over fits x rows are what the fit spends its
        time on."""
        z = b @ design.T
        e = np.exp(-np.abs(z))
        softplus = np.log1p(e) + np.maximum(z, 0.0)
        p = np.where(z >= 0, 1.0, e) / (1.0 + e)
        return (g * softplus - w * z).sum(axis=1) + penalty * (b**2).sum(axis=1), p

    current, p_all = evaluate(beta, wins, games)
    active = np.arange(fits)
    p = p_all
    for _ in range(max_iterations):
        if not len(active):
            break
        b, w, g = beta[active], wins[active], games[active]
        grad = (g * p - w) @ design + 2 * penalty * b
        hessian = ((g * p * (1 - p)) @ outer).reshape(-1, d, d) + ridge
        if penalty > 0:
            step = np.linalg.solve(hessian, grad[:, :, None])[:, :, 0]
        else:
            # Without a penalty the model columns' sum is a flat direction:
            # the minimum-norm step leaves it where it is (bradley_terry_many).
            step = (np.linalg.pinv(hessian, rcond=np.finfo(float).eps * d) @ grad[:, :, None])[:, :, 0]
        size = np.ones(len(active))
        value, p = evaluate(b - step, w, g)
        # Halve a fit's step until it does not make its objective worse (by
        # more than rounding: the objective sums thousands of rows).
        slack = 1e-12 * np.maximum(1.0, np.abs(current[active]))
        while True:
            worse = (size > 1e-6) & (value > current[active] + slack)
            if not worse.any():
                break
            size[worse] /= 2
            retried, p_retried = evaluate(b[worse] - size[worse, None] * step[worse], w[worse], g[worse])
            value[worse], p[worse] = retried, p_retried
        beta[active] = b - size[:, None] * step
        current[active] = value
        moving = np.abs(size[:, None] * step).max(axis=1) >= tol
        active, p = active[moving], p[moving]
    return beta


@dataclass
class StyleFit:
    theta: np.ndarray  # models: log-strengths with the style held equal, centred to mean zero
    lower: np.ndarray  # models: 2.5 percentile of the bootstrap refits
    upper: np.ndarray
    coef: np.ndarray  # style columns: log-odds per standard deviation of each (standardised) feature
    coef_lower: np.ndarray
    coef_upper: np.ndarray


def _style_design(i: np.ndarray, j: np.ndarray, style: np.ndarray, n: int) -> np.ndarray:
    """One row per outcome: +1 in model i's column, -1 in model j's, then the style features."""
    design = np.zeros((len(i), n + style.shape[1]))
    rows = np.arange(len(i))
    design[rows, i] = 1.0
    design[rows, j] = -1.0
    design[:, n:] = style
    return design


def bradley_terry_style(
    outcomes: Sequence[tuple[int, int, float]], style: np.ndarray, n: int, *,
    counts: Sequence[float] | None = None, penalty: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """(theta, coef): Bradley-Terry log-strengths of n models fitted together
    with coefficients for per-outcome style features (rows x features, e.g.
    the standardised length difference of A's answer over B's), as Chatbot
    Arena's style control fits them: P(i beats j) = sigmoid(theta_i -
    theta_j + coef . style). theta is what each model is worth with the
    style held equal. (i, j, score of i) rows as bradley_terry_bootstrap's,
    `counts` ratings each."""
    fit = bradley_terry_style_bootstrap(outcomes, style, n, counts=counts, resamples=0, penalty=penalty)
    return fit.theta, fit.coef


def bradley_terry_style_bootstrap(
    outcomes: Sequence[tuple[int, int, float]], style: np.ndarray, n: int, *,
    counts: Sequence[float] | None = None, resamples: int = 200, seed: int = 0, penalty: float = 1e-3,
) -> StyleFit:
    """bradley_terry_style on every outcome, and the 2.5 / 97.5 percentiles of
    refits on `resamples` resamples of the ratings drawn with replacement
    (multinomial over the rows, as bradley_terry_bootstrap draws them). The
    same ridge on every coefficient (logistic_fit_many). Rows with equal
    (i, j, style) are one design row (its ratings' wins summed), so the fit
    grows with the distinct answer pairs, not with the ratings; the refits
    run side by side in chunks that bound the memory."""
    rows = np.asarray(outcomes, dtype=float).reshape(-1, 3)
    style = np.asarray(style, dtype=float)
    style = style.reshape(len(rows), style.shape[-1] if style.ndim == 2 else 1)
    weight = np.ones(len(rows)) if counts is None else np.asarray(counts, dtype=float)
    k = style.shape[1]
    # (i, j, s, x) and (j, i, 1 - s, -x) say the same: each pair of models
    # one way round, so that both orders share design rows.
    flip = rows[:, 0] > rows[:, 1]
    rows = np.where(flip[:, None], rows[:, [1, 0, 2]] * [1, 1, -1] + [0, 0, 1], rows)
    style = np.where(flip[:, None], -style, style)
    if not len(rows) or weight.sum() <= 0:
        zeros = np.zeros(n), np.zeros(k)
        return StyleFit(zeros[0], zeros[0].copy(), zeros[0].copy(), zeros[1], zeros[1].copy(), zeros[1].copy())
    # Design rows: outcomes that differ only in their score share one.
    keys = np.column_stack([rows[:, :2], style])
    distinct, design_of = np.unique(keys, axis=0, return_inverse=True)
    design_of = design_of.ravel()
    design = _style_design(distinct[:, 0].astype(int), distinct[:, 1].astype(int), distinct[:, 2:], n)
    order = np.argsort(design_of, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(design_of[order]) != 0])

    def per_design_row(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(wins, games) per design row from per-outcome counts (fits x outcomes)."""
        taken = draws[:, order]
        return np.add.reduceat(taken * rows[order, 2], starts, axis=1), np.add.reduceat(taken, starts, axis=1)

    def centred(beta: np.ndarray) -> np.ndarray:
        beta = beta.copy()
        beta[:, :n] -= beta[:, :n].mean(axis=1, keepdims=True)
        return beta

    full = centred(logistic_fit_many(design, *per_design_row(weight[None]), penalty=penalty))[0]
    # The refits start from the full fit, which each resample is close to.
    theta, coef = full[:n], full[n:]
    if resamples <= 0:
        return StyleFit(theta, theta.copy(), theta.copy(), coef, coef.copy(), coef.copy())
    rng = np.random.default_rng(seed)
    total = int(round(weight.sum()))
    chunk = max(1, min(resamples, 2_000_000 // max(len(design), 1)))
    fits = []
    for start in range(0, resamples, chunk):
        draws = rng.multinomial(total, weight / weight.sum(), size=min(chunk, resamples - start)).astype(float)
        fits.append(centred(logistic_fit_many(design, *per_design_row(draws), penalty=penalty, start=full)))
    lower, upper = np.percentile(np.concatenate(fits), [2.5, 97.5], axis=0)
    return StyleFit(theta, lower[:n], upper[:n], coef, lower[n:], upper[n:])

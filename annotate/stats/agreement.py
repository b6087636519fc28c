"""Agreement between annotators: the rating categories, the ordinal scale
A-much-better .. tie .. B-much-better, Krippendorff's alpha on it and
percent agreement (annotate/stats/__init__.py: the conventions)."""
from collections.abc import Hashable, Sequence

import numpy as np

CATEGORIES = ("A", "B", "tie", "both_bad")


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


def ordinal_values(category: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """ordinal_value over arrays: `category` indexes CATEGORIES, `strength`
    is 0 where there is none; NaN (missing) for both_bad."""
    category, strength = np.asarray(category), np.asarray(strength)
    size = np.where(strength > 0, strength, 1).astype(float)
    return np.select([category == 0, category == 1, category == 2], [-size, size, 0.0], default=np.nan)


def krippendorff_alpha_ordinal(units: Sequence[Sequence[float]]) -> float | None:
    """Krippendorff's alpha, ordinal metric. `units` holds, per unit (a
    comparison), the values its annotators gave; missing values are simply
    left out. Units with fewer than two values are not pairable and ignored.
    None when alpha is undefined (no pairable unit, or a single value used)."""
    unit = [u for u, values in enumerate(units) for _ in values]
    return krippendorff_alpha_ordinal_ratings(unit, [v for values in units for v in values])


def krippendorff_alpha_ordinal_ratings(unit: Sequence[int], value: Sequence[float]) -> float | None:
    """krippendorff_alpha_ordinal in long form: one entry per rating, the
    unit (any integer id) it belongs to and its value, NaN for missing."""
    unit, value = np.asarray(unit, dtype=np.int64), np.asarray(value, dtype=float)
    present = ~np.isnan(value)
    unit, value = unit[present], value[present]
    _, unit = np.unique(unit, return_inverse=True)
    pairable = np.bincount(unit)[unit] >= 2
    if not pairable.any():
        return None
    domain, value = np.unique(value[pairable], return_inverse=True)
    if len(domain) < 2:
        return None
    _, unit = np.unique(unit[pairable], return_inverse=True)
    size = len(domain)
    # counts[u, v]: how often unit u got value v.
    counts = np.bincount(unit * size + value, minlength=(unit.max() + 1) * size).reshape(-1, size).astype(float)
    # Coincidence matrix: each ordered pair of values within a unit, weighted
    # 1/(m_u - 1), i.e. the sum over units of (outer(c, c) - diag(c)) / (m_u - 1),
    # as one matrix product.
    scaled = counts / (counts.sum(axis=1, keepdims=True) - 1)
    coincidences = scaled.T @ counts - np.diag(scaled.sum(axis=0))
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
    codes: dict = {}
    unit = [u for u, values in enumerate(units) for _ in values]
    category = [codes.setdefault(x, len(codes)) for values in units for x in values]
    return percent_agreement_ratings(unit, category)


def percent_agreement_ratings(unit: Sequence[int], category: Sequence[int]) -> tuple[float | None, int]:
    """percent_agreement in long form: one entry per rating, its unit and its
    category (integer ids). A unit whose m ratings fall into categories with
    counts c_1, c_2, ... has m(m-1)/2 pairs, of which sum c(c-1)/2 agree."""
    unit, category = np.asarray(unit, dtype=np.int64), np.asarray(category, dtype=np.int64)
    if not len(unit):
        return None, 0
    _, unit = np.unique(unit, return_inverse=True)
    _, category = np.unique(category, return_inverse=True)
    m = np.bincount(unit)
    same = np.bincount(unit * (category.max() + 1) + category)
    pairs = int((m * (m - 1) // 2).sum())
    agree = int((same * (same - 1) // 2).sum())
    return (agree / pairs if pairs else None), pairs

"""Figures over seeds: each ML figure in bench/RESULTS.md is one value per
seed (a whole run each: split, initialisation, data order, samples), and
its interval is across those values, so that it covers what changes from
one run to the next and not only the sampling error of one run's test set
(the per-run Wilson interval, reported beside it).

    summary = across_seeds([0.58, 0.61, 0.55])   # {"mean", "sd", "ci95", "n", "interval"}
"""
from __future__ import annotations

import math
import statistics

# Two-sided 95% Student t critical values by degrees of freedom (no scipy
# in the environment); past 30 the normal 1.96 is within 2%.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 25: 2.060, 30: 2.042}


def t95(df: int) -> float:
    if df < 1:
        raise ValueError("a t interval needs at least two seeds")
    return _T95.get(df) or _T95[max(k for k in _T95 if k <= df)] if df <= 30 else 1.96


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-2' -> [0, 1, 2]."""
    text = text.strip()
    if "-" in text and "," not in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",") if x.strip()]


def across_seeds(values: list[float]) -> dict:
    """Mean over seeds with its 95% Student t interval (mean ± t(n-1) · sd/√n),
    clipped to [0, 1] since every figure here is a rate. One seed: no interval."""
    values = [float(v) for v in values]
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "sd": None, "ci95": None, "n": n, "values": values,
                "interval": "none: one seed (a figure needs >= 3)"}
    sd = statistics.stdev(values)
    half = t95(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci95": [max(0.0, mean - half), min(1.0, mean + half)], "n": n, "values": values,
            "interval": f"95% t interval across {n} seeds (t={t95(n - 1):.3f}, df={n - 1})"}


def fmt(summary: dict) -> str:
    if summary["ci95"] is None:
        return f"{summary['mean']:.3f} (1 seed, no interval)"
    lo, hi = summary["ci95"]
    return f"{summary['mean']:.3f} [{lo:.3f}, {hi:.3f}] (sd {summary['sd']:.3f}, {summary['n']} seeds)"

"""A proportion's confidence interval: a win rate (ties counted as half a
win) with its 95% Wilson score interval."""
from math import sqrt


def wilson_interval(wins: float, n: float, z: float = 1.96) -> tuple[float, float] | tuple[None, None]:
    """Wilson score interval of a proportion (ties counted as half a win)."""
    if n <= 0:
        return None, None
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)

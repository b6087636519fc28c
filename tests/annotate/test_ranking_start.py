"""The bootstrap's refits start from the full fit (annotate/stats/ranking.py):
where they start must not change where they end."""
import numpy as np

from annotate.stats import ranking


def test_refits_end_where_they_end_from_zero_whatever_the_start():
    rng = np.random.default_rng(3)
    n = 12  # a chain: each version compared with the one before only, as a loop campaign's rounds
    stack = np.zeros((20, n, n))
    for f in range(20):
        for v in range(1, n):
            won = rng.binomial(30, 0.6)
            stack[f, v, v - 1], stack[f, v - 1, v] = won, 30 - won
    from_zero = ranking.bradley_terry_many(stack)
    start = ranking.bradley_terry(stack.sum(axis=0))
    assert np.abs(start).max() > 0.5  # a start far from zero
    assert np.allclose(ranking.bradley_terry_many(stack, start=start), from_zero, atol=1e-6)

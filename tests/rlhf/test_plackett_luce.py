"""The ranking likelihood (rlhf.plackett_luce) against references: brute
force over every full order (probability space, no shared code), the
textbook Plackett–Luce formula without ties, Bradley–Terry for two answers,
and autograd's numerical gradient check."""

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F

from rlhf.plackett_luce import implied_pairs, ranking_log_likelihood


def pl_probability(scores: list[float], order: tuple[int, ...]) -> float:
    """Plackett–Luce probability of one full order, best first, as products of choice probabilities."""
    p, left = 1.0, list(order)
    for i in order:
        p *= math.exp(scores[i]) / sum(math.exp(scores[j]) for j in left)
        left.remove(i)
    return p


def brute_force(scores: list[float], groups: list[list[int]]) -> float:
    """log of the summed probability of every full order consistent with the tie groups."""
    rank = {i: g for g, grp in enumerate(groups) for i in grp}
    total = sum(pl_probability(scores, order) for order in itertools.permutations(sorted(rank))
                if all(rank[a] <= rank[b] for x, a in enumerate(order) for b in order[x + 1 :]))
    return math.log(total)


def tie_patterns(k: int):
    """Every ordered partition of range(k) into tie groups, answers shuffled."""
    for perm in itertools.permutations(range(k)):
        for cuts in itertools.product([0, 1], repeat=k - 1):
            groups, cur = [], [perm[0]]
            for x, cut in zip(perm[1:], cuts):
                if cut:
                    groups.append(cur)
                    cur = [x]
                else:
                    cur.append(x)
            yield groups + [cur]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_ranking_likelihood_matches_brute_force_over_full_orders(k):
    rng = random.Random(k)
    for groups in tie_patterns(k):
        scores = [rng.gauss(0, 1.5) for _ in range(k)]
        ours = ranking_log_likelihood(torch.tensor(scores, dtype=torch.float64), groups).item()
        assert ours == pytest.approx(brute_force(scores, groups), abs=1e-10), groups


def test_without_ties_it_is_the_textbook_plackett_luce_and_two_answers_are_bradley_terry():
    s = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=torch.float64)
    order = [2, 0, 3, 1]
    textbook = sum(s[order[t]] - torch.logsumexp(s[order[t:]], 0) for t in range(len(order)))
    assert ranking_log_likelihood(s, [[i] for i in order]).item() == pytest.approx(textbook.item(), abs=1e-12)
    pair = torch.tensor([0.4, -0.9], dtype=torch.float64)
    assert ranking_log_likelihood(pair, [[0], [1]]).item() == pytest.approx(F.logsigmoid(pair[0] - pair[1]).item())


def test_a_ranking_of_all_ties_says_nothing_and_a_tie_on_top_is_weaker_than_an_order():
    s = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    assert ranking_log_likelihood(s, [[0, 1, 2]]).item() == 0.0
    # [0, 1] tied above 2 is consistent with both 0>1>2 and 1>0>2: likelier than either.
    tied = ranking_log_likelihood(s, [[0, 1], [2]]).item()
    assert tied > ranking_log_likelihood(s, [[0], [1], [2]]).item()
    assert tied > ranking_log_likelihood(s, [[1], [0], [2]]).item()


def test_gradient_matches_finite_differences():
    for groups in ([[1], [0, 3], [2]], [[0, 1, 2], [3]], [[3], [2], [1], [0]]):
        s = torch.randn(4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: ranking_log_likelihood(x, groups), (s,))


def test_implied_pairs_count_each_cross_group_pair_once():
    assert implied_pairs([[0], [1, 2], [3]]) == [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]

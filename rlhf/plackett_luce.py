"""Plackett–Luce likelihood of a ranking with ties (imports torch): what the
reward trainer and DPO learn a ranking row from (docs/rlhf.md, "Rankings").

A ranking row's `ranking` is tie groups, best first. Plackett–Luce says an
annotator orders k answers by picking the best among those left, answer i
with probability exp(r_i) / sum of exp(r_j) over the answers left. A tie
group is read as an order the annotator did not resolve: its likelihood is
the probability that its members take the next |S| places in *some* order,
the sum of Plackett–Luce over the |S|! orders of S (the coarsened
likelihood). So a ranking without ties is plain Plackett–Luce, a two-answer
ranking is Bradley–Terry, and a group of all the answers says nothing (as a
"same" is skipped for pairs). The sum over orders runs as a dynamic
programme over the subsets of the group (2^|S| states, k <= 8 in practice),
in log space.

One ranking is one judgement: its negative log-likelihood is one loss term,
weighted by the row's weight like one pair, not k(k-1)/2 pairs that would
count one annotator's decision several times.
"""

from __future__ import annotations

import torch


def group_log_prob(scores: torch.Tensor, group: list[int], left: list[int]) -> torch.Tensor:
    """log P(the answers of `group` take the next |group| places, in any order | the answers `left`).

    `left` holds the answers not placed yet, the group's included.
    Dynamic programme over placed subsets T of the group: f(T + i) collects
    f(T) * exp(r_i) / sum(exp(r_j), j in left minus T).
    """
    rest = [j for j in left if j not in group]
    log_rest = torch.logsumexp(scores[rest], dim=0) if rest else None
    g = scores[group]
    n = len(group)
    f: dict[int, torch.Tensor] = {0: scores.new_zeros(())}
    for mask in range(1 << n):  # masks in increasing order: every subset comes before its supersets
        if mask not in f:
            continue
        remaining = [b for b in range(n) if not mask >> b & 1]
        if not remaining:
            break
        # Normaliser: the group's members not yet placed, plus the answers below the group.
        pool = g[remaining]
        log_z = torch.logsumexp(pool, dim=0)
        if log_rest is not None:
            log_z = torch.logaddexp(log_z, log_rest)
        for b in remaining:
            term = f[mask] + g[b] - log_z
            nxt = mask | 1 << b
            f[nxt] = torch.logaddexp(f[nxt], term) if nxt in f else term
    return f[(1 << n) - 1]


def ranking_log_likelihood(scores: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """Coarsened Plackett–Luce log-likelihood of tie groups (best first) of indices into `scores` (k,)."""
    left = [i for g in groups for i in g]
    total = scores.new_zeros(())
    for group in groups:
        if len(left) == len(group):
            break  # the last group: every order of what is left is consistent, probability 1
        total = total + group_log_prob(scores, group, left)
        left = [j for j in left if j not in group]
    return total


def implied_pairs(groups: list[list[int]]) -> list[tuple[int, int]]:
    """(better, worse) for every two answers in different groups: what a ranking's accuracy counts."""
    return [(i, j) for a, ga in enumerate(groups) for gb in groups[a + 1 :] for i in ga for j in gb]

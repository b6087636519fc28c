"""Which comparisons a round shows: `random`, `uncertainty` or `spread`
(imports torch once a reward model is given).

    picks = select(candidates, n=40, config=SelectionConfig(strategy="uncertainty"),
                   reward_path="runs/reward-v3", rated_rows=rows_rated_so_far)

Every candidate answer is scored once by the current reward model
(rlhf.scoring: sorted, token-budgeted batches), keeping both its reward and
its last-token features, the vector the score head reads.

- `spread`: each candidate's allowed pair with the largest reward gap;
  candidates ranked by that gap (the prompts whose answers the reward model
  tells furthest apart: the comparisons that move a policy most).
- `uncertainty`: `heads` logistic Bradley–Terry heads on those features, each
  fit on a bootstrap resample of the rated pairs, starting from and pulled
  towards the reward model's own score head (so with little data they agree
  with it and disagree only where the ratings leave them free). A pair's
  score is the heads' spread (standard deviation) of P(a beats b): the
  comparisons whose outcome the ratings so far do not pin down. Heads are a
  few LBFGS steps on the CPU over (pairs, hidden) features: no backward pass
  through the model. With no rated rows every head is the score head, so the
  score falls back to the reward model's own doubt, p(1 - p).

A share `exploration` of the picks is drawn uniformly from all candidates
first (reason "exploration"), so the rated data never depends on the model
alone; the strategy then ranks the rest. With strategy "random" or no reward
model every pick is "random". Deterministic for a seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from rlhf.configs import setting

STRATEGIES = ("random", "uncertainty", "spread")

# Each head's prior: a Gaussian around the reward model's score head, worth
# about HEAD_L2 pairs' loss (the pull is divided by the row count), so a few
# rated pairs barely move the heads and many pin them.
HEAD_L2 = 1.0
HEAD_LBFGS_STEPS = 30


@dataclass
class SelectionConfig:
    strategy: str = setting("random", "how pairs are chosen: random | uncertainty | spread")
    exploration: float = setting(0.2, "share of the n picks drawn uniformly at random whatever the strategy")
    heads: int = setting(5, "uncertainty: ensemble heads (bootstrap fits on shared features)")
    seed: int = setting(0, "seed of the exploration draw, the random pairs and the bootstrap resamples")

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown selection strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}")
        if not 0.0 <= self.exploration <= 1.0:
            raise ValueError(f"exploration is a share of the picks, between 0 and 1; got {self.exploration}")
        if self.heads < 2:
            raise ValueError(f"uncertainty needs at least 2 heads to disagree; got heads={self.heads}")


@dataclass
class Candidate:
    key: object
    prompt: object
    answers: list[str]
    allowed: list[tuple[int, int]] | None = None

    def pairs(self) -> list[tuple[int, int]]:
        if self.allowed is not None:
            return [tuple(p) for p in self.allowed]
        n = len(self.answers)
        return [(a, b) for a in range(n) for b in range(a + 1, n)]


@dataclass
class Pick:
    key: object
    pair: tuple[int, int]
    reason: str
    score: float | None


def exploration_count(n: int, exploration: float) -> int:
    """How many of n picks are exploration: the share rounded half up, so 0.2 of 5 is 1 and of 3 is 1."""
    return min(n, math.floor(n * exploration + 0.5))


def select(candidates: list[Candidate], n: int, config: SelectionConfig, *,
           reward_path: str | None, rated_rows: list[dict] | None = None, scorer=None) -> list[Pick]:
    """n picks (at most one per candidate; fewer if there are fewer candidates with a pair to show).

    strategy "random" or reward_path None (and no scorer): every pick reason "random", the caller says
    why. Otherwise a share `exploration` is random (reason "exploration") and the rest go by the
    strategy, highest score first. `scorer` replaces loading reward_path: anything with
    score_features(prompts, answers) -> (rewards, features) and head_weight() (a loaded
    rlhf.scoring.RewardScorer, which a caller scoring every round may keep).
    """
    rng = random.Random(config.seed)
    usable = [c for c in candidates if c.pairs()]
    for c in usable:
        for a, b in c.pairs():
            if a == b or not (0 <= a < len(c.answers) and 0 <= b < len(c.answers)):
                raise ValueError(f"candidate {c.key!r}: pair ({a}, {b}) is not two different answers of {len(c.answers)}")
    n = max(0, min(n, len(usable)))
    if config.strategy == "random" or (reward_path is None and scorer is None):
        return [Pick(c.key, rng.choice(c.pairs()), "random", None) for c in rng.sample(usable, n)]

    n_explore = exploration_count(n, config.exploration)
    explore_idx = set(rng.sample(range(len(usable)), n_explore))
    picks = [Pick(usable[i].key, rng.choice(usable[i].pairs()), "exploration", None) for i in sorted(explore_idx)]
    rest = [c for i, c in enumerate(usable) if i not in explore_idx]
    if n - n_explore == 0 or not rest:
        return picks

    if scorer is None:
        from rlhf.scoring import RewardScorer

        scorer = RewardScorer(reward_path)
    prompts = [c.prompt for c in rest for _ in c.answers]
    rewards, feats = scorer.score_features(prompts, [a for c in rest for a in c.answers])
    if config.strategy == "spread":
        scored = _spread(rest, rewards)
    else:
        heads = fit_heads(*_rated_features(scorer, rated_rows or []), scorer.head_weight(),
                          heads=config.heads, seed=config.seed)
        scored = _uncertainty(rest, feats, heads)
    # Highest score first; ties by the caller's order, so a seed gives one answer.
    order = sorted(range(len(rest)), key=lambda i: (-scored[i][1], i))
    picks += [Pick(rest[i].key, scored[i][0], config.strategy, scored[i][1]) for i in order[: n - n_explore]]
    return picks


def _spread(rest: list[Candidate], rewards: list[float]) -> list[tuple[tuple[int, int], float]]:
    out, at = [], 0
    for c in rest:
        r = rewards[at: at + len(c.answers)]
        at += len(c.answers)
        pair = max(c.pairs(), key=lambda p: abs(r[p[0]] - r[p[1]]))
        out.append((pair, abs(r[pair[0]] - r[pair[1]])))
    return out


def _uncertainty(rest: list[Candidate], feats, heads) -> list[tuple[tuple[int, int], float]]:
    out, at = [], 0
    for c in rest:
        f = feats[at: at + len(c.answers)]
        at += len(c.answers)
        pairs = c.pairs()
        scores = pair_disagreement(heads, f[[a for a, _ in pairs]], f[[b for _, b in pairs]]).tolist()
        best = max(range(len(pairs)), key=lambda j: (scores[j], -j))
        out.append((pairs[best], scores[best]))
    return out


def _rated_features(scorer, rows: list[dict]):
    """(chosen features, rejected features) of the rated rows, in one scoring pass."""
    import torch

    if not rows:
        return torch.zeros(0, 0), torch.zeros(0, 0)
    prompts = [r["prompt"] for r in rows]
    _, feats = scorer.score_features(prompts + prompts, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
    return feats[: len(rows)], feats[len(rows):]


def fit_heads(chosen, rejected, prior, *, heads: int, seed: int, l2: float = HEAD_L2):
    """(heads, hidden) weights: each a Bradley–Terry head, P(c beats r) = sigmoid(w . (f_c - f_r)),
    fit on a bootstrap resample of the rows, with a Gaussian prior around `prior` (the score head).
    No rows: every head is the prior."""
    import torch

    prior = prior.float()
    if len(chosen) == 0:
        return prior.expand(heads, -1).clone()
    diff = (chosen - rejected).float()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(heads):
        rows = diff[torch.randint(len(diff), (len(diff),), generator=gen)]
        w = prior.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([w], max_iter=HEAD_LBFGS_STEPS, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.softplus(-(rows @ w)).mean() + l2 / len(rows) * (w - prior).pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        out.append(w.detach())
    return torch.stack(out)


def pair_disagreement(heads, fa, fb):
    """Per pair (rows of fa, fb): the standard deviation over heads of P(a beats b); with every head
    equal (no rated rows), the reward model's own doubt p(1 - p) instead."""
    import torch

    p = torch.sigmoid((fa - fb).float() @ heads.T)  # (pairs, heads)
    if torch.equal(heads, heads[:1].expand_as(heads)):
        return p[:, 0] * (1 - p[:, 0])
    return p.std(dim=1)

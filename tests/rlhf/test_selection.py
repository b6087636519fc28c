"""rlhf.selection: which comparisons a round shows. Most tests hand select() a
scorer with constructed features (so the expected pick is known); the last
ones run the real scorer on the tiny model."""

import random

import pytest
import torch
from conftest import separable_pairs

from rlhf.selection import (Candidate, SelectionConfig, exploration_count, fit_heads, pair_disagreement,
                            select)


class FeatureScorer:
    """A reward model whose features are given per answer text; reward = head . features."""

    def __init__(self, features: dict[str, list[float]], head: list[float]):
        self.features = features
        self.head = torch.tensor(head)
        self.calls = 0

    def score_features(self, prompts, answers):
        self.calls += 1
        f = torch.tensor([self.features[a] for a in answers], dtype=torch.float32).reshape(len(answers), -1)
        return (f @ self.head).tolist(), f

    def head_weight(self):
        return self.head


def pool(n: int = 30, k: int = 4, seed: int = 0):
    """n candidates of k answers with random 2-d features."""
    rng = random.Random(seed)
    feats, cands = {}, []
    for i in range(n):
        answers = [f"q{i}a{j}" for j in range(k)]
        for a in answers:
            feats[a] = [rng.gauss(0, 1), rng.gauss(0, 1)]
        cands.append(Candidate(key=i, prompt=f"q{i}", answers=answers))
    return cands, feats


def rated(feats, n=12, seed=1):
    """Rated rows whose chosen answer is higher on feature 0; feature 1 is noise."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        c, r = f"rc{i}", f"rr{i}"
        feats[c] = [1.0 + rng.gauss(0, 0.2), rng.gauss(0, 1)]
        feats[r] = [-1.0 + rng.gauss(0, 0.2), rng.gauss(0, 1)]
        rows.append({"prompt": "p", "chosen": c, "rejected": r})
    return rows


@pytest.mark.parametrize("strategy", ["random", "uncertainty", "spread"])
def test_select_is_deterministic_for_a_seed_and_changes_with_it(strategy):
    cands, feats = pool()
    rows = rated(feats)

    def run(seed):
        return select(cands, 10, SelectionConfig(strategy=strategy, seed=seed, exploration=0.3),
                      reward_path=None, rated_rows=rows, scorer=FeatureScorer(feats, [1.0, 0.0]))

    assert run(3) == run(3)
    assert [(p.key, p.pair) for p in run(3)] != [(p.key, p.pair) for p in run(4)]


@pytest.mark.parametrize("n,share,expected", [(10, 0.3, 3), (10, 0.0, 0), (10, 1.0, 10), (5, 0.2, 1), (3, 0.25, 1)])
def test_exploration_share_is_exact(n, share, expected):
    cands, feats = pool()
    picks = select(cands, n, SelectionConfig(strategy="spread", exploration=share), reward_path=None,
                   scorer=FeatureScorer(feats, [1.0, 0.5]))
    assert exploration_count(n, share) == expected
    assert [p.reason for p in picks].count("exploration") == expected
    assert [p.reason for p in picks].count("spread") == n - expected
    assert all(p.score is None for p in picks if p.reason == "exploration")
    assert all(isinstance(p.score, float) for p in picks if p.reason == "spread")


@pytest.mark.parametrize("strategy", ["random", "uncertainty", "spread"])
def test_picks_stay_within_allowed_pairs_and_one_per_candidate(strategy):
    cands, feats = pool(n=20, k=5)
    for c in cands:
        c.allowed = [(0, j) for j in range(1, 5)]  # only against the baseline answer 0
    cands[0].allowed = []  # nothing it may show: never picked
    picks = select(cands, 50, SelectionConfig(strategy=strategy, exploration=0.25), reward_path=None,
                   rated_rows=rated(feats), scorer=FeatureScorer(feats, [1.0, -1.0]))
    assert len(picks) == 19  # at most one per candidate that has a pair to show
    assert len({p.key for p in picks}) == 19 and 0 not in {p.key for p in picks}
    by_key = {c.key: c for c in cands}
    assert all(tuple(p.pair) in by_key[p.key].allowed for p in picks)


def test_without_a_reward_model_every_pick_is_random():
    cands, _ = pool()
    picks = select(cands, 8, SelectionConfig(strategy="uncertainty", exploration=0.5), reward_path=None)
    assert len(picks) == 8 and {p.reason for p in picks} == {"random"}
    assert all(p.score is None for p in picks)


def test_a_bad_pair_or_setting_says_what_is_wrong():
    with pytest.raises(ValueError, match="strategy"):
        SelectionConfig(strategy="loudest")
    with pytest.raises(ValueError, match="exploration"):
        SelectionConfig(exploration=1.5)
    with pytest.raises(ValueError, match="two different answers"):
        select([Candidate(1, "p", ["a", "b"], allowed=[(0, 0)])], 1, SelectionConfig(), reward_path=None)


def test_spread_picks_the_widest_allowed_pair_and_ranks_candidates_by_it():
    feats = {"a": [0.0], "b": [5.0], "c": [1.0], "d": [0.0], "e": [2.0], "f": [0.5]}
    cands = [Candidate("wide", "p", ["a", "b", "c"]), Candidate("narrow", "p", ["d", "e", "f"]),
             Candidate("held", "p", ["a", "b", "c"], allowed=[(0, 2), (1, 2)])]
    picks = select(cands, 3, SelectionConfig(strategy="spread", exploration=0.0), reward_path=None,
                   scorer=FeatureScorer(feats, [1.0]))
    assert [(p.key, p.pair, p.score) for p in picks] == [("wide", (0, 1), 5.0), ("held", (1, 2), 4.0),
                                                          ("narrow", (0, 1), 2.0)]


def test_uncertainty_ranks_a_pair_the_heads_disagree_on_above_one_they_agree_on():
    # The rated pairs pin feature 0 (chosen is higher on it) and leave feature 1 free.
    feats = {"close0": [0.05, 0.0], "close1": [-0.05, 0.0], "free0": [0.0, 3.0], "free1": [0.0, -3.0]}
    rows = rated(feats, n=10)
    cands = [Candidate("pinned", "p", ["close0", "close1"]), Candidate("free", "p", ["free0", "free1"])]
    scorer = FeatureScorer(feats, [0.0, 0.0])
    picks = select(cands, 2, SelectionConfig(strategy="uncertainty", exploration=0.0, heads=8), reward_path=None,
                   rated_rows=rows, scorer=scorer)
    assert [p.key for p in picks] == ["free", "pinned"]
    assert picks[0].score > 3 * picks[1].score
    # The reward model's own doubt, p(1 - p), ranks them the other way: the heads' disagreement decides.
    assert 0.25 - 1e-3 < pair_disagreement(torch.zeros(3, 2), torch.tensor([[0.05, 0.0]]),
                                           torch.tensor([[-0.05, 0.0]])).item() <= 0.25
    assert scorer.calls == 2  # candidates once, rated rows once


def test_heads_fit_the_rated_pairs_and_fall_back_to_the_score_head_without_rows():
    feats: dict = {}
    rows = rated(feats, n=40)
    chosen = torch.tensor([feats[r["chosen"]] for r in rows])
    rejected = torch.tensor([feats[r["rejected"]] for r in rows])
    heads = fit_heads(chosen, rejected, torch.zeros(2), heads=5, seed=0)
    assert heads.shape == (5, 2)
    assert (heads[:, 0] > 1.0).all()  # every head learnt that feature 0 decides
    assert not torch.equal(heads[0], heads[1])  # bootstrap resamples differ
    assert torch.equal(fit_heads(chosen, rejected, torch.zeros(2), heads=5, seed=0), heads)
    empty = fit_heads(torch.zeros(0, 2), torch.zeros(0, 2), torch.tensor([1.0, 2.0]), heads=3, seed=0)
    assert torch.equal(empty, torch.tensor([[1.0, 2.0]] * 3))


def test_scorer_features_are_what_the_score_head_reads(tiny_model_path):
    from rlhf.scoring import RewardScorer

    torch.manual_seed(0)
    scorer = RewardScorer(tiny_model_path)
    prompts = ["is the sky blue?"] * 3 + ["is the sea green? tell me more about it please"] * 2
    answers = ["yes", "no, the sky is grey today and the road is black", "yes, blue", "no", "the sea is green."]
    rewards, feats = scorer.score_features(prompts, answers)
    assert feats.shape == (5, scorer.model.config.hidden_size)
    assert rewards == pytest.approx(scorer(prompts, answers), abs=1e-5)
    assert (feats @ scorer.head_weight()).tolist() == pytest.approx(rewards, abs=1e-4)


def test_select_on_the_tiny_reward_model(tiny_model_path):
    from rlhf.scoring import RewardScorer

    rows = separable_pairs(n_prompts=8, per_prompt=2)
    cands = [Candidate(i, f"question {i}: is the sky blue?", ["yes, the sky is blue.", "no.", "yes", "the sea is red."])
             for i in range(12)]
    torch.manual_seed(0)
    scorer = RewardScorer(tiny_model_path)
    for strategy in ("uncertainty", "spread"):
        picks = select(cands, 6, SelectionConfig(strategy=strategy, exploration=0.5), reward_path=tiny_model_path,
                       rated_rows=rows, scorer=scorer)
        assert sorted(p.reason for p in picks) == ["exploration"] * 3 + [strategy] * 3
        scores = [p.score for p in picks if p.reason == strategy]
        assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)

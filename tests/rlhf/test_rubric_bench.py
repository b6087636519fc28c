"""bench/rubric_rankings.py's pieces, shortened: the time costs, the
simulated raters, the accuracy it reports, and a reward model trained on its
rankings beating chance on its held-out questions."""

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import rubric_rankings as rb  # noqa: E402


def test_annotator_time_buys_fewer_judgements_of_the_costlier_kinds():
    costs = rb.Costs(t_read=10, t_judge=5, t_aspect=2)
    assert costs.seconds("pairs") == 25 and costs.seconds("aspects") == 29 and costs.seconds("rank4") == 55
    ids = list(range(50))
    for way in rb.WAYS:
        rows, judgements = rb.dataset(way, 3600, costs, ids, seed=0)
        assert judgements == int(3600 // costs.seconds(way))
        assert 0.8 * judgements <= len(rows) <= judgements  # ties spend time and train nothing


def test_raters_follow_the_known_utility():
    rng = random.Random(0)
    rankings = [rb.rate_ranking(i, rng) for i in range(300)]
    assert all(sorted(t for g in r["ranking"] for t in g) == sorted(set(t for g in r["ranking"] for t in g))
               and sum(map(len, r["ranking"])) == 4 for r in rankings)
    top_wins = sum(rb.utility(r["ranking"][0][0]) > rb.utility(r["ranking"][-1][0]) for r in rankings)
    assert top_wins / len(rankings) > 0.8
    pairs = [p for p in (rb.rate_pair(i, rng, True) for i in range(300)) if p]
    assert sum(rb.utility(p["chosen"]) > rb.utility(p["rejected"]) for p in pairs) / len(pairs) > 0.7
    for p in pairs:
        reasons = ["because" in p[k].split() for k in ("chosen", "rejected")]
        assert (p["aspects"]["reasoned"] == 0) == (reasons[0] == reasons[1])
        assert set(p["aspects"].values()) <= {-1, 0, 1}


def test_the_worlds_weights_decide_what_raters_prefer(monkeypatch):
    # a long reasoned answer against a short unreasoned one: the default world
    # (1, 1) prefers the short one, a world that weighs reasons 1.5 and
    # brevity 0.3 the reasoned one
    short = "yes, the sky is blue."
    reasoned = ("yes, the sky is blue because of the air, and so on, as you can see, and that is all, "
                "which is plain, as we all know.")
    assert rb.utility(short) > rb.utility(reasoned)
    monkeypatch.setitem(rb.WEIGHTS, "concise", 0.3)
    monkeypatch.setitem(rb.WEIGHTS, "reasoned", 1.5)
    assert rb.utility(reasoned) > rb.utility(short)
    rng = random.Random(0)
    pairs = [p for p in (rb.rate_pair(i, rng, False) for i in range(300)) if p]
    assert sum(rb.utility(p["chosen"]) > rb.utility(p["rejected"]) for p in pairs) / len(pairs) > 0.7


def test_accuracy_counts_pairs_of_different_utility():
    texts = ["yes, a b.", "yes, a b because c d.", "no, a b c d e f g h."]
    utilities = [rb.utility(t) for t in texts]
    assert rb.accuracy(utilities, texts) == (3, 3)
    assert rb.accuracy([-u for u in utilities], texts) == (0, 3)


def test_dpo_rows_from_aspects_follow_the_vote():
    row = {"prompt": "p", "chosen": "a", "rejected": "b", "aspects": {"concise": -1, "reasoned": -1}}
    tie = {"prompt": "p", "chosen": "a", "rejected": "b", "aspects": {"concise": -1, "reasoned": 0}}
    [flipped] = rb.dpo_rows([row, tie], "aspects")
    assert (flipped["chosen"], flipped["rejected"]) == ("b", "a")


def test_plackett_luce_on_the_bench_rankings_beats_chance_on_heldout_questions(tiny_model_path, tmp_path):
    ids = list(range(200))
    rows, _ = rb.dataset("rank4", 1.0 * 3600, rb.Costs(), ids[:150], seed=0)
    val, test = rb.heldout(ids[150:170], 0), rb.heldout(ids[170:], 0)
    result = rb.reward_model("rank4", rows, tiny_model_path, tmp_path, val, test, [3e-3], 3)
    assert result["test_accuracy"] > 0.65

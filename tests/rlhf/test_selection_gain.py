"""The shortened CI run of bench/selection_gain.py on the tiny model: the
learning curves exist per preference, strategy and seed, each round's picks
carry the configured reasons and exploration share, no pair is rated twice,
the test and validation questions are never shown, and the reward model ends
above chance. The figures themselves (ratings saved) are bench/RESULTS.md's."""

import pytest

from bench.selection_gain import Judge, load_pool, parse_args, run, split
from rlhf.selection import exploration_count


@pytest.fixture(scope="module")
def result(tiny_model_path):
    args = parse_args(["--model-path", tiny_model_path, "--questions", "80", "--seeds", "2", "--rounds", "4",
                       "--batch", "20", "--exploration", "0.3", "--max-length", "1024", "--threads", "1",
                       "--preferences", "keyword:was", "human"])
    return args, run(args, log=lambda *_: None)


def test_curves_per_preference_strategy_and_seed_with_the_configured_reasons(result):
    args, out = result
    assert set(out["preferences"]) == {"keyword:was", "human"}
    for spec, pr in out["preferences"].items():
        assert [r["seed"] for r in pr["runs"]] == [0, 1]
        for run_ in pr["runs"]:
            assert set(run_["strategies"]) == {"random", "uncertainty", "spread"}
            for strategy, lc in run_["strategies"].items():
                assert [c["ratings"] for c in lc["curve"]] == [20, 40, 60, 80]
                assert lc["reasons"][0] == ["random"] * 20  # no reward model yet: random, as round 0 is
                for reasons in lc["reasons"][1:]:
                    if strategy == "random":
                        assert reasons == ["random"] * 20
                    else:
                        assert reasons.count("exploration") == exploration_count(20, 0.3) == 6
                        assert reasons.count(strategy) == 14
        assert set(pr["summary"]) == {"random", "uncertainty", "spread"}
    keyword = out["preferences"]["keyword:was"]["summary"]
    assert keyword["spread"]["seeds_with_signal_accuracy"] == 2  # validation above chance on both seeds
    assert "saving_accuracy" in keyword["spread"] and "saving_accuracy" not in keyword["random"]


def test_picks_are_fresh_pool_pairs_the_preference_can_judge(result):
    args, out = result
    questions, answers, human = load_pool(80)
    for spec, pr in out["preferences"].items():
        judge = Judge(spec, questions, answers, human)
        for run_ in pr["runs"]:
            pool, val, test = split(80, run_["seed"])
            assert not set(pool) & (set(val) | set(test))
            for lc in run_["strategies"].values():
                picks = [tuple(p) for p in lc["picks"]]
                assert len(set(picks)) == len(picks) == 80
                assert {q for q, _, _ in picks} <= set(pool)
                assert all(judge(q, i, j) is not None for q, i, j in picks)


def test_the_reward_model_learns_the_keyword_above_chance(result):
    # The tiny model's random features see the keyword (whole texts: --max-length 1024): the head fit on every
    # pool pair is well above chance on the validation questions, and 80 ratings are above chance on the test ones.
    _, out = result
    runs = out["preferences"]["keyword:was"]["runs"]
    for r in runs:
        assert r["val_full_accuracy"] > 0.6
        assert 0.5 < r["target_accuracy"] <= r["val_full_accuracy"]
    finals = [lc["curve"][-1]["accuracy"] for r in runs for lc in r["strategies"].values()]
    assert sum(finals) / len(finals) > 0.52

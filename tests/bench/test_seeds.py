"""The benches' figures are over seeds, on questions that chose nothing
(issue 20): the interval across seeds, the simulated campaign's question
splits, the real-data bench's fresh test questions."""
import argparse

import pytest

from bench.data import questions
from bench.policy_eval import pooled
from bench.reward_real_data import split_for_seed, tuned_questions
from bench.seeds import across_seeds, parse_seeds
from bench.simulated_campaign import parse_args, question_splits


def test_across_seeds_gives_the_student_t_interval_of_the_mean():
    # mean 0.6, sd 0.1, n 3: half width 4.303 * 0.1 / sqrt(3) = 0.2484
    summary = across_seeds([0.5, 0.6, 0.7])
    assert summary["mean"] == pytest.approx(0.6) and summary["sd"] == pytest.approx(0.1)
    assert summary["ci95"] == pytest.approx([0.6 - 0.24844, 0.6 + 0.24844], abs=1e-4)
    assert "t interval across 3 seeds" in summary["interval"]


def test_one_seed_has_no_interval_and_says_so():
    assert across_seeds([0.7])["ci95"] is None and "one seed" in across_seeds([0.7])["interval"]


def test_parse_seeds_takes_a_list_or_a_range():
    assert parse_seeds("0,1,2") == parse_seeds("0-2") == [0, 1, 2]


def test_pooled_quotes_the_interval_across_seeds_and_keeps_the_pooled_wilson_beside_it():
    def run(seed, rate):
        point = {"win_rate": rate, "n": 100, "ci95": [0, 1], "kl_estimate": 1.0, "mean_words": 5.0}
        return {"seed": seed, "preference": "shorter", "strength": 4.0, "noise": 0.1, "mean_win_rate": rate,
                "rounds": [point | {"round": 0}, point | {"round": 1}]}

    setting = pooled([run(0, 0.6), run(1, 0.7), run(2, 0.8)])
    last = setting["rounds"][-1]
    assert last["win_rate"] == pytest.approx(0.7) and last["ci95"] == last["across_seeds"]["ci95"]
    assert last["ci95"][0] < last["ci95_wilson_pooled"][0] < 0.7  # three seeds vary more than 300 pairs' sampling
    assert setting["seeds"] == [0, 1, 2] and "t interval" in setting["interval"]


def test_the_campaign_reports_on_test_questions_apart_from_the_validation_ones_settings_were_chosen_on():
    args = parse_args(["--rounds", "3", "--comparisons", "12", "--eval-prompts", "96", "--seeds", "0,1,2",
                       "--preference", "shorter", "keyword:is"])
    splits = question_splits(args)
    everything = questions()
    assert splits["validation"] == everything[-96:]  # where TRAINING's settings were read
    assert len(splits["test"]) == 96 and not set(splits["test"]) & set(splits["validation"])
    assert not set(splits["train"]) & (set(splits["test"]) | set(splits["validation"]))
    assert args.seed_list == [0, 1, 2] and args.preferences == ["shorter", "keyword:is"]


def test_the_campaign_refuses_rated_questions_that_would_overlap_the_held_out_ones():
    with pytest.raises(SystemExit, match="overlap"):
        question_splits(parse_args(["--rounds", "5", "--comparisons", "64", "--eval-prompts", "96"]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_data_test_questions_are_fresh_and_apart_from_training(seed):
    from rlhf.data import read_preferences

    from bench.data import DATA

    rows = read_preferences(DATA)
    args = argparse.Namespace(test_from="fresh", train_pairs=300, eval_fraction=0.3, val_fraction=0.1, seed=seed)
    train, test = split_for_seed(rows, args)
    test_q, train_q = {r["prompt"] for r in test}, {r["prompt"] for r in train}
    assert test_q and not test_q & tuned_questions(rows) and not test_q & train_q
    assert len(train) >= 300

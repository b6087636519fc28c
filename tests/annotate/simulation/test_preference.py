"""The preference and the rater's decision (annotate/simulation/preference.py):
pure functions, no database."""
import math
import random

import pytest

from annotate.stats import intervals
from annotate.simulation.preference import (
    Judge,
    Preference,
    preference_margin,
    preference_outcome,
    preference_parse,
    preference_scores,
    simulated_choice,
)
from tests.annotate.simulation.campaigns import LONG, SHORT


@pytest.mark.parametrize("spec, expected", [
    ("shorter", Preference("shorter")),
    (" Longer ", Preference("longer")),
    ("keyword:Because", Preference("keyword", "because")),
    ("reward:12", Preference("reward", "12")),
    ("reward:/models/rm", Preference("reward", "/models/rm")),
])
def test_preference_parse_reads_each_kind(spec, expected):
    assert preference_parse(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("louder", "unknown preference"),
    ("", "unknown preference"),
    ("keyword:", "needs one word"),
    ("keyword:two words", "needs one word"),
    ("shorter:5", "takes no argument"),
    ("reward:", "needs a reward model"),
])
def test_preference_parse_says_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        preference_parse(spec)


def test_shorter_prefers_the_shorter_answer_and_longer_the_longer():
    shorter, longer = preference_scores(Preference("shorter"), ["q", "q"], [SHORT, LONG])
    assert preference_margin(shorter, longer) > 2  # log(1+17) - log(1+1)
    a, b = preference_scores(Preference("longer"), ["q", "q"], [SHORT, LONG])
    assert preference_margin(a, b) < -2


def test_an_answer_without_a_word_loses_under_every_preference():
    for kind in ("shorter", "longer"):
        empty, real = preference_scores(Preference(kind), ["q", "q"], ["  ...  ", SHORT])
        assert preference_margin(empty, real) == -math.inf
        assert preference_outcome(preference_margin(empty, real)) == 0.0
    both = preference_scores(Preference("shorter"), ["q", "q"], ["", "!"])
    margin = preference_margin(*both)
    assert math.isnan(margin) and preference_outcome(margin) == 0.5
    assert simulated_choice(margin, strength=4, noise=0, position_bias=0, rng=random.Random(0)) == ("both_bad", None)


def test_keyword_counts_whole_words_case_blind():
    scores = preference_scores(Preference("keyword", "paris"), ["q"] * 3, ["Paris, paris!", "Parisian food", "Paris"])
    assert scores[0] > scores[2] > scores[1] == 0.0


def test_reward_preference_scores_with_the_scorer_it_is_given():
    calls = []

    def scorer(prompts, answers):
        calls.append((list(prompts), list(answers)))
        return [float(len(a)) for a in answers]

    scores = preference_scores(Preference("reward", "x"), ["p1", "p2"], ["ab", "abcd"], scorer=scorer)
    assert scores == [2.0, 4.0] and calls == [(["p1", "p2"], ["ab", "abcd"])]
    with pytest.raises(ValueError, match="needs its scorer"):
        preference_scores(Preference("reward", "x"), ["p"], ["a"])


def test_careful_rater_follows_the_preference_and_rates_clear_differences_strongly():
    rng = random.Random(0)
    picks = [simulated_choice(2.5, strength=4, noise=0, position_bias=0, rng=rng) for _ in range(200)]
    assert picks == [("A", 3)] * 200  # sigmoid(10): effectively certain
    assert simulated_choice(0.0, strength=4, noise=0, position_bias=0, rng=rng) == ("tie", None)
    assert simulated_choice(0.05, strength=4, noise=0, position_bias=0, rng=rng) == ("tie", None)  # |z| 0.2 < 0.25
    assert simulated_choice(-2.5, strength=4, noise=0, position_bias=0, rng=rng) == ("B", 3)
    weak = [simulated_choice(0.1, strength=4, noise=0, position_bias=0, rng=rng) for _ in range(50)]
    assert all(s == 1 for _, s in weak)  # |z| = 0.4: slightly better


def test_bradley_terry_rater_picks_a_with_probability_sigmoid_of_strength_times_margin():
    rng = random.Random(1)
    margin, strength, n = 0.3, 2.0, 20000
    share = sum(simulated_choice(margin, strength=strength, noise=0, position_bias=0, rng=rng)[0] == "A"
                for _ in range(n)) / n
    expected = 1 / (1 + math.exp(-strength * margin))  # 0.646
    assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_noise_picks_at_random_and_position_bias_picks_the_left_answer():
    rng = random.Random(2)
    noisy = [simulated_choice(-3.0, strength=4, noise=1.0, position_bias=0, rng=rng) for _ in range(4000)]
    share_a = sum(c == "A" for c, _ in noisy) / len(noisy)
    assert 0.46 < share_a < 0.54
    assert {s for _, s in noisy} == {1, 2, 3}
    biased = [simulated_choice(-3.0, strength=4, noise=0, position_bias=1.0, rng=rng)[0] for _ in range(100)]
    assert biased == ["A"] * 100
    half = [simulated_choice(-3.0, strength=4, noise=0, position_bias=0.5, rng=rng)[0] for _ in range(4000)]
    assert 0.46 < half.count("A") / len(half) < 0.54  # the rest follow the preference: B


def test_wilson_interval_matches_the_published_formula():
    # The interval bench/simulated_campaign.py puts on its win rates.
    # Wilson (1927); e.g. 8 of 10 gives [0.490, 0.943] (Newcombe 1998, table I method 3).
    lo, hi = intervals.wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    lo, hi = intervals.wilson_interval(0, 20)
    assert lo == 0.0 and round(hi, 3) == 0.161


def test_reward_preference_scores_as_rlhf_reward_does(tiny_reward_model):
    from rlhf.reward import score

    answers = [SHORT, LONG, "Lyon."]
    judged = Judge(preference_parse(f"reward:{tiny_reward_model}"), tiny_reward_model).scores(["q"] * 3, answers)
    assert judged == pytest.approx(score(tiny_reward_model, ["q"] * 3, answers), abs=1e-5)
    assert len(set(judged)) == 3


def test_simulated_ranking_follows_clear_scores_ties_close_ones_and_noise_shuffles():
    import random

    from annotate.simulation.preference import simulated_ranking

    rng = random.Random(0)
    # clear differences, a careful rater: the scores' order, every time
    for _ in range(50):
        assert simulated_ranking([1.0, 9.0, 5.0, -3.0], strength=4, noise=0.0, rng=rng) == [[2], [3], [1], [4]]
    # two answers closer than the rater can see share a place; one that says nothing is last
    assert simulated_ranking([2.0, 2.01, 9.0, float("-inf")], strength=4, noise=0.0, rng=rng) in (
        [[3], [1, 2], [4]], [[3], [2, 1], [4]])
    # Plackett-Luce: with a small difference the better answer is first about sigmoid(strength x margin)
    firsts = sum(simulated_ranking([0.3, 0.0, -9.0], strength=4, noise=0.0, rng=rng)[0][0] == 1 for _ in range(4000))
    assert abs(firsts / 4000 - 1 / (1 + math.exp(-1.2))) < 0.03
    # noise 1: every order at random, no ties
    orders = {tuple(g[0] for g in simulated_ranking([1.0, 9.0, 5.0], strength=4, noise=1.0, rng=rng))
              for _ in range(200)}
    assert len(orders) == 6

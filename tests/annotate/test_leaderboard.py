"""The leaderboard: Bradley-Terry scores of policy versions checked against
`choix`, bootstrap intervals, and each round's candidate win rate, on ratings
generated from planted version strengths."""
import math
import random

import numpy as np
import pytest

from annotate.stats import intervals, ranking
from annotate.models import Role
from annotate.selectors.leaderboard import campaign_leaderboard
from tests.factories import ratings_bulk_create, version_chain_rounds

pytestmark = pytest.mark.django_db

# Planted log-strengths of v0..v3: each version better than its parent.
STRENGTHS = [0.0, 0.6, 1.0, 1.8]
TIE_RATE = 0.15


def planted_ratings(rounds, annotators, seed=0):
    """Each annotator rates every comparison: a tie with TIE_RATE, otherwise
    the side whose version wins a Bradley-Terry draw from STRENGTHS; both_bad
    now and then, which the leaderboard ignores."""
    rng = random.Random(seed)
    rows = []
    for round_ in rounds:
        for c in round_.comparisons.select_related("response_a__policy_version", "response_b__policy_version"):
            a, b = c.response_a.policy_version.version, c.response_b.policy_version.version
            p_a = 1 / (1 + math.exp(STRENGTHS[b] - STRENGTHS[a]))
            for annotator in annotators:
                draw = rng.random()
                if draw < 0.05:
                    choice = "both_bad"
                elif draw < 0.05 + TIE_RATE:
                    choice = "tie"
                else:
                    choice = "A" if rng.random() < p_a else "B"
                rows.append(
                    {"comparison": c, "annotator": annotator, "choice": choice,
                     "strength": rng.randint(1, 3) if choice in "AB" else None}
                )
    return ratings_bulk_create(rows)


@pytest.fixture
def four_versions(make_user):
    annotators = [make_user(Role.ANNOTATOR) for _ in range(4)]
    rounds = version_chain_rounds(versions=4, prompts=80, annotators=annotators, overlap=4)
    ratings = planted_ratings(rounds, annotators)
    return rounds, ratings


def choix_scores(ratings, penalty):
    """The same fit by choix: each A/B rating as two wins (choix has no
    fractional wins), each tie as one win each way, i.e. the data doubled, so
    choix's regularisation is 2x ours. Self-comparisons (round 0) left out."""
    import choix

    data = []
    for r in ratings:
        c = r.comparison
        a, b = c.response_a.policy_version.version, c.response_b.policy_version.version
        if a == b or r.choice == "both_bad":
            continue
        if r.choice == "tie":
            data += [(a, b), (b, a)]
        else:
            data += [(a, b)] * 2 if r.choice == "A" else [(b, a)] * 2
    theta = choix.opt_pairwise(len(STRENGTHS), data, alpha=2 * penalty)
    return theta - theta.mean(), data


def test_bradley_terry_matches_choix_on_planted_versions(four_versions):
    # given
    rounds, ratings = four_versions
    expected, _ = choix_scores(ratings, penalty=1e-3)
    # when
    board = campaign_leaderboard(campaign=rounds[0].campaign, resamples=0)
    # then: same log-strengths, to well within any rounding (Elo points)
    by_version = {v["version"]: v for v in board["versions"]}
    theta = np.array([(by_version[v]["score"] - ranking.ELO_BASE) / ranking.ELO_SCALE for v in range(4)])
    assert np.abs(theta - expected).max() < 1e-5
    # and the planted order is found
    assert [v["version"] for v in board["versions"]] == [3, 2, 1, 0]


def test_bradley_terry_unregularised_agrees_with_choix_ilsr():
    import choix

    # given: no ties, 6 items, random pairs
    rng = np.random.default_rng(3)
    truth = np.linspace(-1.5, 1.5, 6)
    outcomes, data = [], []
    for _ in range(3000):
        i, j = rng.choice(6, 2, replace=False)
        win = rng.random() < 1 / (1 + np.exp(truth[j] - truth[i]))
        outcomes.append((i, j, 1.0 if win else 0.0))
        data.append((i, j) if win else (j, i))
    # when
    mine = ranking.bradley_terry(ranking.outcomes_matrix(outcomes, 6), penalty=0.0)
    theirs = choix.ilsr_pairwise(6, data)
    # then
    assert np.abs(mine - (theirs - theirs.mean())).max() < 1e-4
    assert list(np.argsort(mine)) == list(range(6))


def test_leaderboard_intervals_hold_the_scores_and_are_reproducible(four_versions):
    # given
    rounds, _ = four_versions
    campaign = rounds[0].campaign
    # when
    board = campaign_leaderboard(campaign=campaign)
    again = campaign_leaderboard(campaign=campaign)
    # then
    assert board == again  # fixed seed
    assert "200 resamples" in board["interval"]
    for v in board["versions"]:
        assert v["lower"] < v["score"] < v["upper"]
        assert v["n"] > 0
    # v3's planted lead over v0 (1.8 in log-odds, ~780 Elo points) is far outside the noise
    top, bottom = board["versions"][0], board["versions"][-1]
    assert top["lower"] > bottom["upper"]
    # the mean version sits at 1000
    assert np.mean([v["score"] for v in board["versions"]]) == pytest.approx(1000.0)


def test_round_win_rates_count_the_candidates_side(four_versions):
    # given
    rounds, ratings = four_versions
    # when
    board = campaign_leaderboard(campaign=rounds[0].campaign, resamples=0)
    # then
    by_round = {r["round"]: r for r in board["rounds"]}
    assert by_round[0]["same_policy"] is True
    for round_ in rounds[1:]:
        mine = [r for r in ratings if r.comparison.round_id == round_.pk and r.choice != "both_bad"]
        wins = sum(r.choice == ("A" if r.comparison.candidate_is_a else "B") for r in mine)
        ties = sum(r.choice == "tie" for r in mine)
        row = by_round[round_.index]
        assert (row["n"], row["wins"], row["ties"], row["losses"]) == (len(mine), wins, ties, len(mine) - wins - ties)
        assert row["win_rate"] == pytest.approx((wins + ties / 2) / len(mine))
        assert row["lower"] < row["win_rate"] < row["upper"]
        assert (row["candidate_version"], row["baseline_version"]) == (round_.index, round_.index - 1)
    # every candidate is better than its parent, and by enough to show
    assert all(by_round[i]["lower"] > 0.5 for i in (1, 3))


def test_wilson_interval_matches_the_textbook_value():
    low, high = intervals.wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert intervals.wilson_interval(0, 0) == (None, None)


def test_a_version_that_never_lost_gets_a_finite_score(make_user):
    # given: v1 wins every rating
    annotator = make_user(Role.ANNOTATOR)
    _, round1 = version_chain_rounds(versions=2, prompts=5, annotators=[annotator])
    ratings_bulk_create(
        {"comparison": c, "annotator": annotator, "choice": "A" if c.candidate_is_a else "B", "strength": 3}
        for c in round1.comparisons.all()
    )
    # when
    board = campaign_leaderboard(campaign=round1.campaign)
    # then
    top = board["versions"][0]
    assert top["version"] == 1 and math.isfinite(top["score"]) and math.isfinite(top["upper"])
    assert board["rounds"][1]["win_rate"] == 1.0 and board["rounds"][1]["upper"] == 1.0


def test_leaderboard_api(four_versions, ml_engineer_client, campaign_admin_client, annotator_client):
    rounds, _ = four_versions
    url = f"/api/campaigns/{rounds[0].campaign_id}/leaderboard/"
    # when
    answer = ml_engineer_client.get(url, {"resamples": 50})
    # then
    assert answer.status_code == 200
    assert [v["version"] for v in answer.data["versions"]] == [3, 2, 1, 0]
    assert {"score", "lower", "upper", "n"} <= set(answer.data["versions"][0])
    assert [r["round"] for r in answer.data["rounds"]] == [0, 1, 2, 3]
    assert "50 resamples" in answer.data["interval"]
    assert campaign_admin_client.get(url, {"resamples": 0}).status_code == 200
    assert campaign_admin_client.get(url, {"resamples": -1}).status_code == 400
    assert annotator_client.get(url).status_code == 403


def test_leaderboard_of_a_campaign_without_ratings(make_user, ml_engineer_client):
    (round0,) = version_chain_rounds(versions=1, prompts=2)
    answer = ml_engineer_client.get(f"/api/campaigns/{round0.campaign_id}/leaderboard/")
    assert answer.status_code == 200
    assert answer.data["versions"][0]["score"] is None and answer.data["versions"][0]["n"] == 0
    assert answer.data["rounds"][0]["win_rate"] is None

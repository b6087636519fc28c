"""The overview's per-round win rate in a loop campaign that ranks k
answers: each ranking read as the candidate's answers against the
baseline's (above: win, tied: tie, below: loss), each implied pair
weighted 2/k as on the leaderboard, computed by hand here and checked
against the leaderboard's own per-round record."""
import uuid

import pytest

from annotate.models import Answer, Rating
from annotate.selectors.leaderboard import campaign_leaderboard
from annotate.selectors.overview import campaign_overview
from tests.factories import UserFactory, next_k_set_round, ratings_bulk_create

pytestmark = pytest.mark.django_db


def ranking_with(comparison, order_by_version: list[list[tuple[int, int]]]) -> list[list[int]]:
    """A ranking (tie groups of display positions) from tie groups of
    (version, sample_index) of the answers."""
    shown = {(a.policy_version.version, a.sample_index): comparison.answers.index(a.pk) + 1
             for a in Answer.objects.filter(pk__in=comparison.answers).select_related("policy_version")}
    return [[shown[key] for key in group] for group in order_by_version]


def test_a_k_set_rounds_win_rate_reads_each_ranking_as_one_judgement(make_open_round):
    # given: round 1 ranks v1's two samples with v0's first, on 3 prompts
    round1 = next_k_set_round(make_open_round(prompts=3, rank_k=3))
    campaign = round1.campaign
    c1, c2, c3 = round1.comparisons.order_by("pk")
    orders = [
        (c1, [[(1, 0)], [(0, 0)], [(1, 1)]]),  # a win and a loss, 2/3 each
        (c2, [[(1, 0), (1, 1)], [(0, 0)]]),  # two wins
        (c3, [[(0, 0), (1, 1)], [(1, 0)]]),  # a tie and a loss
    ]
    rater = UserFactory()
    ratings_bulk_create(
        {"comparison": c, "annotator": rater, "choice": Rating.Choice.RANKING, "ranking": ranking_with(c, order),
         "idempotency_key": uuid.uuid4()}
        for c, order in orders
    )
    # when
    row = campaign_overview(campaign=campaign)["rounds"][1]
    # then: 3 wins, 1 tie, 2 losses of weight 2/3 each
    record = row["vs_previous"]
    assert (record["wins"], record["ties"], record["losses"], record["n"]) == pytest.approx((2, 2 / 3, 4 / 3, 4))
    assert record["win_rate"] == pytest.approx((2 + 1 / 3) / 4)
    assert 0 <= record["lower"] < record["win_rate"] < record["upper"] <= 1
    # and vs the base is the same meeting (v1 against v0)
    assert row["vs_base"]["win_rate"] == pytest.approx(record["win_rate"])
    # and the leaderboard's record of the round says the same
    board = campaign_leaderboard(campaign=campaign, resamples=0)
    (same,) = [r for r in board["rounds"] if r["round"] == 1]
    assert (same["n"], same["win_rate"], same["lower"], same["upper"]) == pytest.approx(
        (record["n"], record["win_rate"], record["lower"], record["upper"]))

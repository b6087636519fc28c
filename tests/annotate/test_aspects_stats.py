"""Quality and the leaderboard per rubric aspect, checked against values
computed by hand (the workings are in each test's comments), and the API and
console pages that show them."""
import math

import pytest

from annotate.models import Campaign, Role
from annotate.selectors.leaderboard import campaign_leaderboard
from annotate.selectors.quality import campaign_quality
from annotate.stats import ranking
from tests.factories import open_round, ratings_bulk_create, version_chain_rounds

pytestmark = pytest.mark.django_db

ASPECTS = [
    {"name": "correctness", "question": "Which answer is more correct?", "key": "c"},
    {"name": "safety", "question": "Which answer is safer?", "key": "f"},
]


@pytest.fixture
def three_raters(make_user):
    return [make_user(Role.ANNOTATOR, username=f"rater{i}") for i in (1, 2, 3)]


@pytest.fixture
def judged_round(three_raters):
    """Three comparisons judged on correctness:
    c1: rater1 A, rater2 A; c2: rater1 B, rater2 B; c3: rater1 A, rater2 same, rater3 A.
    The overall choice is always "tie", so nothing of the overall figures leaks in."""
    u1, u2, u3 = three_raters
    round_ = open_round(prompts=3, overlap=3, annotators=three_raters, aspects=ASPECTS)
    c1, c2, c3 = round_.comparisons.order_by("pk")
    judged = [(c1, u1, "A"), (c1, u2, "A"), (c2, u1, "B"), (c2, u2, "B"), (c3, u1, "A"), (c3, u2, "same"),
              (c3, u3, "A")]
    ratings_bulk_create([{"comparison": c, "annotator": u, "choice": "tie", "aspects": {"correctness": v}}
                         for c, u, v in judged])
    return round_


def test_quality_per_aspect_matches_hand_computed_values(judged_round, three_raters):
    # when
    report = campaign_quality(campaign=judged_round.campaign)
    # then
    correctness, safety = report["aspects"]
    assert (correctness["name"], safety["name"]) == ("correctness", "safety")
    assert correctness["n_ratings"] == 7 and correctness["n_comparisons"] == 3
    # Krippendorff's alpha, ordinal, A -1 / same 0 / B +1. Coincidences: c1 and
    # c2 give o(-1,-1) = 2, o(1,1) = 2; c3 (m = 3, weight 1/2) gives
    # o(-1,-1) += 1, o(-1,0) = o(0,-1) = 1. So n(-1) = 4, n(0) = 1, n(1) = 2,
    # n = 7. Ordinal distances: d(-1,0) = (5 - 2.5)^2 = 6.25,
    # d(-1,1) = (7 - 3)^2 = 16, d(0,1) = (3 - 1.5)^2 = 2.25.
    # Observed 2 x 6.25 = 12.5; expected 2 (4x1x6.25 + 4x2x16 + 1x2x2.25) / 6
    # = 52.5; alpha = 1 - 12.5 / 52.5 = 16/21.
    assert correctness["alpha"] == pytest.approx(16 / 21)
    assert correctness["alpha_units"] == 3
    # Pairs: c1 1 (agree), c2 1 (agree), c3 3 (one agrees): 3 of 5.
    assert (correctness["percent_agreement"], correctness["agreement_pairs"]) == (pytest.approx(0.6), 5)
    # Dawid-Skene: c1 A, c2 B, c3 A (two of three say A).
    assert correctness["consensus_labels"] == {"A": 2, "B": 1}
    rows = {row["username"]: row for row in correctness["annotators"]}
    assert rows["rater1"]["n"] == 3 and rows["rater1"]["consensus_agreement"] == pytest.approx(1.0)
    assert rows["rater2"]["consensus_agreement"] == pytest.approx(2 / 3)
    assert rows["rater3"]["consensus_n"] == 1 and rows["rater3"]["consensus_agreement"] == pytest.approx(1.0)
    assert rows["rater1"]["left_pick_rate"] == pytest.approx(2 / 3)  # A, B, A
    assert rows["rater2"]["left_pick_rate"] == pytest.approx(1 / 2) and rows["rater2"]["same_rate"] == pytest.approx(1 / 3)
    assert rows["rater1"]["reliability"] is None  # 3 shared judgments, under RELIABILITY_MIN_RATINGS
    # Nobody judged safety.
    assert safety["n_ratings"] == 0 and safety["alpha"] is None and safety["annotators"] == []


def test_quality_api_and_console_page_show_each_aspect(judged_round, ml_engineer_client, ml_engineer, client):
    campaign = judged_round.campaign
    answer = ml_engineer_client.get(f"/api/campaigns/{campaign.pk}/quality/")
    assert answer.status_code == 200
    assert [a["name"] for a in answer.data["aspects"]] == ["correctness", "safety"]
    assert answer.data["aspects"][0]["alpha"] == pytest.approx(16 / 21)
    client.force_login(ml_engineer)
    page = client.get(f"/console/campaigns/{campaign.pk}/quality/").content.decode()
    assert 'id="aspect-correctness"' in page and "0.762" in page
    assert "No judgments of this aspect yet." in page  # safety


def test_quality_of_a_campaign_without_aspects_has_none(judged_round):
    Campaign.objects.filter(pk=judged_round.campaign_id).update(aspects=[])
    campaign = Campaign.objects.get(pk=judged_round.campaign_id)
    assert campaign_quality(campaign=campaign)["aspects"] == []


@pytest.fixture
def two_versions(make_user):
    """Round 1 pairs v1 with v0 on 4 prompts; one rater judges correctness:
    v1 better on two, v0 on one, the same on one (sides as shown: A or B
    wherever v1 happened to be). The overall choice is always v0, so that an
    aspect board that read it would come out the other way round."""
    rater = make_user(Role.ANNOTATOR)
    rounds = version_chain_rounds(versions=2, prompts=4, annotators=[rater], aspects=ASPECTS)
    rows = []
    for comparison, verdict in zip(rounds[1].comparisons.select_related("response_a__policy_version")
                                   .order_by("pk"), ["v1", "v1", "v0", "same"]):
        v1_is_a = comparison.response_a.policy_version.version == 1
        side = "same" if verdict == "same" else ("A" if (verdict == "v1") == v1_is_a else "B")
        overall = "B" if v1_is_a else "A"
        rows.append({"comparison": comparison, "annotator": rater, "choice": overall, "strength": 2,
                     "aspects": {"correctness": side}})
    ratings_bulk_create(rows)
    return rounds


def test_leaderboard_per_aspect_matches_hand_computed_bradley_terry(two_versions):
    # when
    board = campaign_leaderboard(campaign=two_versions[0].campaign, resamples=20)
    # then: v1 has 2.5 of 4 (same = half each), v0 1.5: theta(v1) - theta(v0)
    # = ln(2.5 / 1.5), centred: +-ln(5/3)/2 on the Elo-like scale (the fit's
    # 1e-3 ridge moves it by well under a point).
    correctness, safety = board["aspects"]
    assert correctness["n_ratings"] == 4
    scores = {m["name"]: m["score"] for m in correctness["models"]}
    half_gap = ranking.ELO_SCALE * math.log(5 / 3) / 2
    assert scores["v1"] == pytest.approx(1000 + half_gap, abs=1.0)
    assert scores["v0"] == pytest.approx(1000 - half_gap, abs=1.0)
    assert [m["name"] for m in correctness["models"]] == ["v1", "v0"]
    for m in correctness["models"]:
        assert m["lower"] <= m["score"] <= m["upper"] and m["n"] == 4
    # The overall board read the overall choice: v0 won all four.
    overall = {m["name"]: m["score"] for m in board["models"]}
    assert overall["v0"] > overall["v1"]
    assert safety["n_ratings"] == 0 and all(m["score"] is None for m in safety["models"])


def test_leaderboard_api_and_models_page_show_each_aspect(two_versions, ml_engineer_client, ml_engineer, client):
    campaign = two_versions[0].campaign
    answer = ml_engineer_client.get(f"/api/campaigns/{campaign.pk}/leaderboard/?resamples=20")
    assert answer.status_code == 200
    assert answer.data["aspects"][0]["name"] == "correctness"
    assert answer.data["aspects"][0]["models"][0]["name"] == "v1"
    client.force_login(ml_engineer)
    page = client.get(f"/console/campaigns/{campaign.pk}/models/").content.decode()
    assert 'id="aspect-board-correctness"' in page

"""Data quality: agreement numbers checked against the `krippendorff` package
and hand counts, and Dawid-Skene consensus finding a planted careless
annotator and down-weighting them in the reward model's training rows."""
import random

import numpy as np
import pytest

from annotate.stats import agreement, consensus
from annotate.models import Rating, Role
from annotate.selectors.quality import annotator_weights, campaign_quality
from annotate.selectors.training import preference_rows
from tests.factories import open_round, ratings_bulk_create, version_chain_rounds

pytestmark = pytest.mark.django_db

CHOICES = ["A", "B", "tie", "both_bad"]


def planted_ratings(round_, annotators, *, careless=(), left_biased=(), gold_every=5, seed=0):
    """Ratings with a known structure: each comparison has a planted true
    category and strength; careful annotators report it with 90% accuracy
    (otherwise another category), `careless` ones answer uniformly at random,
    `left_biased` ones pick A 90% of the time whatever the truth. Every
    `gold_every`-th comparison is a gold pair (gold_choice = truth)."""
    rng = random.Random(seed)
    rows = []
    for n, comparison in enumerate(round_.comparisons.order_by("pk")):
        truth = rng.choices(CHOICES, weights=[40, 40, 15, 5])[0]
        truth_strength = rng.randint(1, 3) if truth in "AB" else None
        if n % gold_every == 0:
            comparison.gold_choice = truth
            comparison.save(update_fields=["gold_choice"])
        for annotator in annotators:
            if annotator in careless:
                choice = rng.choice(CHOICES)
            elif annotator in left_biased:
                choice = "A" if rng.random() < 0.9 else rng.choice(["B", "tie"])
            elif rng.random() < 0.9:
                choice = truth
            else:
                choice = rng.choice([c for c in CHOICES if c != truth])
            strength = (truth_strength if choice == truth else rng.randint(1, 3)) if choice in "AB" else None
            rows.append(
                {
                    "comparison": comparison, "annotator": annotator, "choice": choice, "strength": strength,
                    "time_on_task_ms": rng.randint(5_000, 60_000),
                }
            )
    return ratings_bulk_create(rows)


@pytest.fixture
def careful_and_careless(make_user):
    """One round of 150 comparisons rated by 5 careful annotators and 1 careless one."""
    careful = [make_user(Role.ANNOTATOR, username=f"careful{i}") for i in range(5)]
    careless = make_user(Role.ANNOTATOR, username="careless")
    round_ = open_round(prompts=150, overlap=6, annotators=careful + [careless])
    planted_ratings(round_, careful + [careless], careless=[careless])
    return round_, careful, careless


def reliability_matrix(campaign):
    """The ratings as the krippendorff package wants them: annotators x
    comparisons, ordinal value or NaN (missing, or both_bad)."""
    ratings = list(Rating.objects.filter(comparison__round__campaign=campaign))
    annotators = sorted({r.annotator_id for r in ratings})
    comparisons = sorted({r.comparison_id for r in ratings})
    data = np.full((len(annotators), len(comparisons)), np.nan)
    for r in ratings:
        value = {"A": -(r.strength or 0), "B": r.strength or 0, "tie": 0}.get(r.choice)
        if value is not None:
            data[annotators.index(r.annotator_id), comparisons.index(r.comparison_id)] = value
    return data


# --- agreement -----------------------------------------------------------------


def test_ordinal_value_maps_the_scale_from_a_much_better_to_b_much_better():
    assert [agreement.ordinal_value("A", s) for s in (3, 2, 1)] == [-3, -2, -1]
    assert agreement.ordinal_value("tie", None) == 0
    assert [agreement.ordinal_value("B", s) for s in (1, 2, 3)] == [1, 2, 3]
    assert agreement.ordinal_value("both_bad", None) is None


def test_krippendorff_alpha_matches_the_krippendorff_package_on_random_data_with_gaps():
    import krippendorff

    rng = np.random.default_rng(7)
    for trial in range(5):
        data = rng.integers(-3, 4, size=(6, 80)).astype(float)
        # Some agreement, so alpha is not just noise around 0.
        data[:, : 40 + trial] = rng.integers(-3, 4, size=40 + trial)
        data[rng.random(data.shape) < 0.3] = np.nan
        units = [[v for v in data[:, j] if not np.isnan(v)] for j in range(data.shape[1])]
        # when
        mine = agreement.krippendorff_alpha_ordinal(units)
        # then
        assert mine == pytest.approx(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"), abs=1e-9)


def test_campaign_alpha_matches_the_krippendorff_package_with_both_bad_missing(careful_and_careless):
    import krippendorff

    # given
    round_, _, _ = careful_and_careless
    both_bad = Rating.objects.filter(choice="both_bad").count()
    assert both_bad > 0
    # when
    report = campaign_quality(campaign=round_.campaign)
    # then
    expected = krippendorff.alpha(reliability_data=reliability_matrix(round_.campaign), level_of_measurement="ordinal")
    assert report["alpha"] == pytest.approx(expected, abs=1e-9)
    assert 0.5 < report["alpha"] < 1.0
    assert report["alpha_both_bad_missing"] == both_bad
    assert "missing" in report["alpha_note"]
    assert report["n_ratings"] == 900 and report["n_comparisons"] == 150


def test_alpha_is_none_when_no_comparison_has_two_ratings():
    assert agreement.krippendorff_alpha_ordinal([[1], [2], []]) is None
    assert agreement.krippendorff_alpha_ordinal([[1, 1], [1, 1]]) is None


def test_percent_agreement_counts_pairs_of_annotators_on_a_hand_made_example():
    # given: 3 + 1 + 1 pairs, of which 1 + 1 + 0 agree
    units = [["A", "A", "B"], ["tie", "tie"], ["both_bad", "A"], ["B"]]
    # when
    share, pairs = agreement.percent_agreement(units)
    # then
    assert (share, pairs) == (pytest.approx(2 / 5), 5)


def test_campaign_percent_agreement_on_a_hand_made_round(make_user):
    # given
    a, b, c = (make_user(Role.ANNOTATOR) for _ in range(3))
    round_ = open_round(prompts=3, overlap=3, annotators=[a, b, c])
    first, second, third = round_.comparisons.order_by("pk")
    ratings_bulk_create(
        [
            {"comparison": first, "annotator": a, "choice": "A", "strength": 3},
            {"comparison": first, "annotator": b, "choice": "A", "strength": 1},
            {"comparison": first, "annotator": c, "choice": "B", "strength": 2},
            {"comparison": second, "annotator": a, "choice": "tie"},
            {"comparison": second, "annotator": b, "choice": "tie"},
            {"comparison": third, "annotator": a, "choice": "both_bad"},
        ]
    )
    # when
    report = campaign_quality(campaign=round_.campaign)
    # then: A/A agrees whatever the strength; the third comparison has no pair
    assert report["percent_agreement"] == pytest.approx(2 / 4)
    assert report["agreement_pairs"] == 4


# --- consensus and annotators --------------------------------------------------


def test_dawid_skene_recovers_the_truth_better_than_a_majority_vote_of_noisy_labels():
    # given: 3 good workers (85%) and 4 spammers on 300 items
    rng = random.Random(1)
    truth = {i: rng.choice(CHOICES) for i in range(300)}
    labels = []
    for item, t in truth.items():
        for w in range(7):
            if w < 3:
                label = t if rng.random() < 0.85 else rng.choice(CHOICES)
            else:
                label = rng.choice(CHOICES)
            labels.append((item, w, label))
    # when
    result = consensus.dawid_skene(labels)
    # then
    labels_of = result.consensus()
    accuracy = np.mean([labels_of[i][0] == t for i, t in truth.items()])
    assert accuracy > 0.9
    kappa = dict(zip(result.workers, result.informativeness))
    assert min(kappa[w] for w in range(3)) > 0.6
    assert max(kappa[w] for w in range(3, 7)) < 0.15


def test_careless_annotator_is_found_and_down_weighted(careful_and_careless):
    # given
    round_, careful, careless = careful_and_careless
    # when
    report = campaign_quality(campaign=round_.campaign)
    # then
    table = {row["username"]: row for row in report["annotators"]}
    lazy = table["careless"]
    others = [table[u.username] for u in careful]
    assert lazy["weight"] == min(row["weight"] for row in table.values())
    assert lazy["weight"] < 0.2 < 1.0 < min(r["weight"] for r in others)
    assert lazy["reliability"] < 0.15 and min(r["reliability"] for r in others) > 0.7
    assert lazy["consensus_agreement"] < min(r["consensus_agreement"] for r in others)
    assert lazy["consensus_agreement"] < 0.4
    # gold: 30 pairs; chance is 1 in 4
    assert lazy["gold_n"] == 30 and lazy["gold_accuracy"] < 0.5
    assert min(r["gold_accuracy"] for r in others) > 0.75
    assert report["consensus_method"].startswith("Dawid-Skene")


def test_preference_rows_carry_reliability_weights_with_mean_one(careful_and_careless):
    # given
    round_, careful, careless = careful_and_careless
    # when
    rows = preference_rows(campaign=round_.campaign)
    # then
    weights = np.array([r["weight"] for r in rows])
    assert weights.mean() == pytest.approx(1.0, abs=1e-9)
    by_annotator = {r["annotator_id"]: r["weight"] for r in rows}
    assert by_annotator[careless.pk] < 0.2 * min(by_annotator[u.pk] for u in careful)
    assert annotator_weights(campaign=round_.campaign) == pytest.approx(by_annotator)
    assert {r["round"] for r in rows} == {round_.index}  # what DPO's last_rounds selects by


def test_weights_are_one_when_there_are_too_few_ratings_to_estimate(open_round, annotator, other_annotator):
    # given: two annotators, three comparisons each
    ratings_bulk_create(
        {"comparison": c, "annotator": u, "choice": "A", "strength": 2}
        for c in open_round.comparisons.all()
        for u in (annotator, other_annotator)
    )
    # when
    rows = preference_rows(campaign=open_round.campaign)
    report = campaign_quality(campaign=open_round.campaign)
    # then
    assert [r["weight"] for r in rows] == [1.0] * 6
    assert all(row["reliability"] is None and row["weight"] == 1.0 for row in report["annotators"])


def test_left_pick_rate_finds_a_position_biased_annotator(make_user):
    # given
    careful = [make_user(Role.ANNOTATOR) for _ in range(4)]
    biased = make_user(Role.ANNOTATOR, username="lefty")
    round_ = open_round(prompts=120, overlap=5, annotators=careful + [biased])
    planted_ratings(round_, careful + [biased], left_biased=[biased])
    # when
    table = {row["annotator_id"]: row for row in campaign_quality(campaign=round_.campaign)["annotators"]}
    # then
    assert table[biased.pk]["left_pick_rate"] > 0.85
    assert all(0.3 < table[u.pk]["left_pick_rate"] < 0.7 for u in careful)


def test_annotator_table_counts_rates_and_median_seconds(open_round, annotator, other_annotator):
    # given
    first, second, third = open_round.comparisons.order_by("pk")
    ratings_bulk_create(
        [
            {"comparison": first, "annotator": annotator, "choice": "A", "strength": 1, "time_on_task_ms": 4000},
            {"comparison": second, "annotator": annotator, "choice": "tie", "time_on_task_ms": 10000},
            {"comparison": third, "annotator": annotator, "choice": "both_bad", "time_on_task_ms": 2000},
            {"comparison": first, "annotator": other_annotator, "choice": "B", "strength": 2},
        ]
    )
    # when
    table = {row["annotator_id"]: row for row in campaign_quality(campaign=open_round.campaign)["annotators"]}
    # then
    mine = table[annotator.pk]
    assert (mine["n"], mine["left_pick_rate"], mine["median_seconds"]) == (3, 1.0, 4.0)
    assert mine["tie_rate"] == mine["both_bad_rate"] == pytest.approx(1 / 3)
    assert mine["gold_n"] == 0 and mine["gold_accuracy"] is None
    theirs = table[other_annotator.pk]
    assert (theirs["n"], theirs["left_pick_rate"], theirs["median_seconds"]) == (1, 0.0, None)


# --- API -------------------------------------------------------------------------


def test_quality_api_reports_one_round_when_asked(make_user, ml_engineer_client):
    # given: round 0 all agree, round 1 all disagree
    a, b = make_user(Role.ANNOTATOR), make_user(Role.ANNOTATOR)
    round0, round1 = version_chain_rounds(versions=2, prompts=4, annotators=[a, b])
    ratings_bulk_create(
        {"comparison": c, "annotator": u, "choice": "A", "strength": 2} for c in round0.comparisons.all() for u in (a, b)
    )
    ratings_bulk_create(
        {"comparison": c, "annotator": u, "choice": choice, "strength": 2}
        for c in round1.comparisons.all()
        for u, choice in ((a, "A"), (b, "B"))
    )
    url = f"/api/campaigns/{round0.campaign_id}/quality/"
    # when
    everything = ml_engineer_client.get(url)
    first = ml_engineer_client.get(url, {"round": 0})
    second = ml_engineer_client.get(url, {"round": 1})
    # then
    assert everything.status_code == first.status_code == second.status_code == 200
    assert (everything.data["percent_agreement"], everything.data["n_ratings"]) == (0.5, 16)
    assert (first.data["round"], first.data["percent_agreement"], first.data["n_ratings"]) == (0, 1.0, 8)
    assert (second.data["round"], second.data["percent_agreement"]) == (1, 0.0)
    assert second.data["alpha"] < 0


def test_quality_api_refuses_a_round_the_campaign_does_not_have(open_round, campaign_admin_client):
    answer = campaign_admin_client.get(f"/api/campaigns/{open_round.campaign_id}/quality/", {"round": 5})
    assert answer.status_code == 400
    assert "no round 5" in answer.data["detail"] and "[0]" in answer.data["detail"]
    answer = campaign_admin_client.get(f"/api/campaigns/{open_round.campaign_id}/quality/", {"round": "x"})
    assert answer.status_code == 400


def test_quality_api_is_for_admins_and_engineers_only(open_round, annotator_client, campaign_admin_client):
    url = f"/api/campaigns/{open_round.campaign_id}/quality/"
    assert annotator_client.get(url).status_code == 403
    empty = campaign_admin_client.get(url)
    assert empty.status_code == 200
    assert (empty.data["alpha"], empty.data["percent_agreement"], empty.data["annotators"]) == (None, None, [])
    assert campaign_admin_client.get("/api/campaigns/999999/quality/").status_code == 404

"""The leaderboard over models and its length-controlled score: the fit
(annotate/stats/) checked against scikit-learn's logistic regression on
the same design matrix, and the leaderboard of an evaluation campaign whose
raters favour long answers (planted), where the plain score rewards the
verbose model and the length-controlled one does not."""
import math
import random

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from annotate.stats import ranking
from annotate.models import Role
from annotate.selectors.leaderboard import campaign_leaderboard
from annotate.services.evaluation import evaluation_comparisons_add, evaluation_start
from tests.factories import evaluation_campaign, ratings_bulk_create, version_chain_rounds


def planted_outcomes(seed=0, n=5, rows=4000, gamma=0.8):
    """(i, j, score) rows from planted strengths and a planted length effect,
    about 10% ties, with a standardised length feature; and the design."""
    rng = np.random.default_rng(seed)
    truth = np.linspace(-1.0, 1.0, n)
    i = rng.integers(0, n, rows)
    j = (i + rng.integers(1, n, rows)) % n
    feature = ranking.length_feature(rng.integers(20, 3000, rows), rng.integers(20, 3000, rows))
    z = ranking.standardised(feature, np.ones(rows))
    p = 1 / (1 + np.exp(-(truth[i] - truth[j] + gamma * z)))
    score = np.where(rng.random(rows) < 0.1, 0.5, (rng.random(rows) < p).astype(float))
    return list(zip(i.tolist(), j.tolist(), score.tolist())), z, truth


def sklearn_fit(outcomes, z, n, C, counts=None):
    """The reference: each row split into an outcome-1 row weighted by its
    score and an outcome-0 row weighted by the rest (a tie: half each),
    times its count; the same design matrix, no intercept."""
    rows = np.asarray(outcomes, dtype=float)
    weight = np.ones(len(rows)) if counts is None else np.asarray(counts, dtype=float)
    design = np.zeros((len(rows), n + 1))
    design[np.arange(len(rows)), rows[:, 0].astype(int)] = 1.0
    design[np.arange(len(rows)), rows[:, 1].astype(int)] = -1.0
    design[:, n] = z
    x = np.vstack([design, design])
    y = np.r_[np.ones(len(rows)), np.zeros(len(rows))]
    w = np.r_[rows[:, 2] * weight, (1 - rows[:, 2]) * weight]
    keep = w > 0
    model = LogisticRegression(C=C, fit_intercept=False, tol=1e-12, max_iter=100000)
    model.fit(x[keep], y[keep], sample_weight=w[keep])
    return model.coef_[0]


def test_length_controlled_fit_matches_scikit_learn_with_the_same_ridge():
    # given
    outcomes, z, _ = planted_outcomes()
    penalty = 1e-3
    # when
    theta, coef = ranking.bradley_terry_style(outcomes, z[:, None], 5, penalty=penalty)
    # then: sklearn minimises C * loss + |w|^2 / 2, i.e. C = 1 / (2 * penalty)
    reference = sklearn_fit(outcomes, z, 5, C=1 / (2 * penalty))
    assert np.abs(theta - (reference[:5] - reference[:5].mean())).max() < 1e-6
    assert abs(coef[0] - reference[5]) < 1e-6
    # and the planted effect is found
    assert coef[0] > 0.5


def test_length_controlled_fit_on_tallied_rows_matches_scikit_learn_unregularised():
    # given: the same outcomes tallied (as the database sends them), no ridge
    outcomes, z, _ = planted_outcomes(seed=4, n=4, rows=3000)
    keys = [(i, j, s, round(float(x), 2)) for (i, j, s), x in zip(outcomes, z)]
    tally = {}
    for key in keys:
        tally[key] = tally.get(key, 0) + 1
    rows = [k[:3] for k in tally]
    feature = np.array([k[3] for k in tally])
    counts = list(tally.values())
    # when
    theta, coef = ranking.bradley_terry_style(rows, feature[:, None], 4, counts=counts, penalty=0.0)
    # then: sklearn without a penalty (its minimum is unique only up to the
    # models' mean, which both centre)
    reference = sklearn_fit(rows, feature, 4, C=np.inf, counts=counts)
    assert np.abs(theta - (reference[:4] - reference[:4].mean())).max() < 1e-5
    assert abs(coef[0] - reference[4]) < 1e-5


def test_length_controlled_bootstrap_holds_the_fit_and_is_reproducible():
    outcomes, z, _ = planted_outcomes(seed=2, rows=2000)
    fit = ranking.bradley_terry_style_bootstrap(outcomes, z[:, None], 5, resamples=100, seed=3)
    again = ranking.bradley_terry_style_bootstrap(outcomes, z[:, None], 5, resamples=100, seed=3)
    assert np.array_equal(fit.lower, again.lower) and np.array_equal(fit.coef_upper, again.coef_upper)
    assert (fit.lower < fit.theta).all() and (fit.theta < fit.upper).all()
    assert fit.coef_lower[0] < fit.coef[0] < fit.coef_upper[0]
    # without any style, the fit is plain Bradley-Terry
    plain = ranking.bradley_terry(ranking.outcomes_matrix(outcomes, 5))
    flat, coef = ranking.bradley_terry_style(outcomes, np.zeros((len(outcomes), 1)), 5)
    assert np.abs(flat - plain).max() < 1e-6 and coef[0] == 0.0


def test_length_feature_and_standardising():
    assert ranking.length_feature([300, 0, 100], [100, 0, 300]).tolist() == [0.5, 0.0, -0.5]
    z = ranking.standardised([0.5, 0.0, -0.5, 0.0], [1, 2, 1, 0])
    assert np.average(z, weights=[1, 2, 1, 0]) == pytest.approx(0.0)
    assert np.average(z**2, weights=[1, 2, 1, 0]) == pytest.approx(1.0)
    assert ranking.standardised([0.2, 0.2], [1, 1]).tolist() == [0.0, 0.0]


# --- the leaderboard of an evaluation campaign -------------------------------------------

STRENGTH = {"model-a": 0.0, "model-b": 0.6, "model-c": 1.2, "model-d": 0.6}
LENGTH_BIAS = 2.5  # log-odds per unit of the normalised length difference


def answer_text(model, prompt):
    """model-d pads its answers to about three times the others' length."""
    rng = random.Random(f"{model.name}:{prompt.external_id}")
    words = rng.randint(40, 80) * (3 if model.name == "model-d" else 1)
    return " ".join(["word"] * words)


@pytest.fixture
def verbose_evaluation(db, make_user):
    annotators = [make_user(Role.ANNOTATOR) for _ in range(3)]
    campaign, models = evaluation_campaign(
        models=4, prompts=150, text=answer_text, comparisons_per_round=600, overlap=3, annotators=annotators,
        gold_frequency=0,
    )
    round_, _ = evaluation_start(campaign=campaign)
    rng = random.Random(0)
    rows = []
    # In creation order: an unordered query may come back in another order
    # under load, and the ratings drawn below would then differ run to run.
    shown = round_.comparisons.select_related("response_a__external_model", "response_b__external_model")
    for c in shown.order_by("pk"):
        a, b = c.response_a, c.response_b
        x = ranking.length_feature([len(a.text)], [len(b.text)])[0]
        logit = STRENGTH[a.external_model.name] - STRENGTH[b.external_model.name] + LENGTH_BIAS * x
        for annotator in annotators:
            draw = rng.random()
            choice = "tie" if draw < 0.1 else ("A" if rng.random() < 1 / (1 + math.exp(-logit)) else "B")
            rows.append({"comparison": c, "annotator": annotator, "choice": choice,
                         "strength": 2 if choice != "tie" else None})
    ratings_bulk_create(rows)
    return campaign


def test_leaderboard_ranks_every_model_and_the_length_controlled_score_undoes_the_length_bias(verbose_evaluation):
    # when
    board = campaign_leaderboard(campaign=verbose_evaluation, resamples=100)
    # then: every external model, by name
    by_name = {m["name"]: m for m in board["models"]}
    assert set(by_name) == set(STRENGTH) and board["versions"] == []
    assert all(m["kind"] == "external" and m["version"] is None and m["n"] > 0 for m in board["models"])
    # the plain score rewards the verbose model over its equal, model-b ...
    plain_gap = by_name["model-d"]["score"] - by_name["model-b"]["score"]
    assert plain_gap > 100
    # ... and the length-controlled one does not
    lc_gap = by_name["model-d"]["lc_score"] - by_name["model-b"]["lc_score"]
    assert abs(lc_gap) < plain_gap / 3
    assert by_name["model-c"]["lc_score"] > by_name["model-b"]["lc_score"] > by_name["model-a"]["lc_score"]
    for m in board["models"]:
        assert m["lc_lower"] < m["lc_score"] < m["lc_upper"]
    # the planted length effect is found, well away from 0
    control = board["length_control"]
    assert control["lower"] > 0.3 and control["lower"] < control["coefficient"] < control["upper"]


def test_leaderboard_pairs_count_every_rating_between_two_models(verbose_evaluation):
    board = campaign_leaderboard(campaign=verbose_evaluation, resamples=0)
    assert len(board["pairs"]) == 6
    assert sum(p["n"] for p in board["pairs"]) == board["n_ratings"]
    for p in board["pairs"]:
        assert p["wins"] + p["ties"] + p["losses"] == p["n"]
        assert p["lower"] <= p["win_rate"] <= p["upper"]
    # an evaluation round has no candidate: its count only
    (round_row,) = board["rounds"]
    assert (round_row["candidate_version"], round_row["win_rate"], round_row["n"]) == (None, None, board["n_ratings"])


def test_leaderboard_api_and_models_page_show_both_scores(verbose_evaluation, ml_engineer_client, client, ml_engineer):
    answer = ml_engineer_client.get(f"/api/campaigns/{verbose_evaluation.pk}/leaderboard/", {"resamples": 20})
    assert answer.status_code == 200
    top = answer.data["models"][0]
    assert {"kind", "name", "score", "lower", "upper", "lc_score", "lc_lower", "lc_upper", "reference"} <= set(top)
    assert answer.data["length_control"]["coefficient"] > 0
    client.force_login(ml_engineer)
    page = client.get(f"/console/campaigns/{verbose_evaluation.pk}/models/").content.decode()
    assert page.count('<circle class="mark"') == page.count('<rect class="mark-lc"') == 4
    assert 'id="length-coefficient"' in page and 'id="pair-win-rates"' in page
    assert 'id="round-win-rates"' not in page  # no candidate to speak of
    for name in STRENGTH:
        assert f'<tr data-model="{name}">' in page


def test_more_comparisons_keep_the_leaderboard_balanced(db):
    campaign, _ = evaluation_campaign(models=5, prompts=60, comparisons_per_round=20)
    evaluation_start(campaign=campaign)
    evaluation_comparisons_add(campaign=campaign, count=180)
    board = campaign_leaderboard(campaign=campaign, resamples=0)
    assert board["models"][0]["score"] is None  # no ratings yet: listed, unscored
    assert len(board["models"]) == 5


def test_a_loop_campaigns_board_lists_its_versions_as_models(make_user):
    annotator = make_user(Role.ANNOTATOR)
    _, round1 = version_chain_rounds(versions=2, prompts=6, annotators=[annotator])
    ratings_bulk_create(
        {"comparison": c, "annotator": annotator, "choice": "A" if c.candidate_is_a else "B", "strength": 2}
        for c in round1.comparisons.all()
    )
    board = campaign_leaderboard(campaign=round1.campaign, resamples=0)
    assert board["models"] == board["versions"]
    assert [(m["kind"], m["name"]) for m in board["models"]] == [("policy", "v1"), ("policy", "v0")]
    assert board["kind"] == "loop" and board["reference_model"] is None
    assert board["rounds"][1]["against_reference"] is None

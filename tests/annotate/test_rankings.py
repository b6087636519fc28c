"""Rankings of k answers (campaign.rank_k 3 or 4): the k-sets a round opens,
what the next API sends, the ranking a rating carries, and every bad
submission a 400 that writes nothing."""
import uuid

import pytest

from annotate.models import Answer, Comparison, Lease, Rating
from tests.factories import next_k_set_round

pytestmark = pytest.mark.django_db


@pytest.fixture
def ranking_round(make_open_round, annotator, other_annotator):
    """Round 0 of a campaign ranking 4 answers, 3 prompts, overlap 2."""
    return make_open_round(prompts=3, overlap=2, rank_k=4, annotators=[annotator, other_annotator])


def lease(client, campaign_id: int) -> dict:
    answer = client.post(f"/api/campaigns/{campaign_id}/next/")
    assert answer.status_code == 200, answer.content
    return answer.data


def rank(client, comparison_id: int, ranking, key=None, **extra):
    body = {"comparison": comparison_id, "ranking": ranking, "idempotency_key": str(key or uuid.uuid4()), **extra}
    return client.post("/api/ratings/", body, format="json")


def snapshot() -> tuple:
    return (
        Rating.objects.count(),
        list(Comparison.objects.order_by("pk").values_list("rating_count", flat=True)),
        list(Lease.objects.order_by("pk").values_list("status", flat=True)),
    )


def test_round_open_makes_one_k_set_per_prompt_in_a_recorded_shuffled_order(ranking_round):
    comparisons = list(ranking_round.comparisons.order_by("pk"))
    assert len(comparisons) == 3
    orders = []
    for c in comparisons:
        answers = {a.pk: a for a in Answer.objects.filter(pk__in=c.answers)}
        assert len(c.answers) == 4 and len(answers) == 4
        assert {a.prompt_id for a in answers.values()} == {c.prompt_id}
        assert (c.response_a_id, c.response_b_id) == (c.answers[0], c.answers[1])
        assert c.candidate_is_a is None
        orders.append(tuple(answers[pk].sample_index for pk in c.answers))
    # Display orders are drawn per set, not sample order every time.
    assert any(order != (0, 1, 2, 3) for order in orders)


def test_a_later_round_ranks_k_minus_1_candidate_samples_with_the_baselines_first(make_open_round):
    round1 = next_k_set_round(make_open_round(prompts=2, rank_k=3))
    for c in round1.comparisons.all():
        shown = Answer.objects.filter(pk__in=c.answers)
        assert sorted((a.policy_version.version, a.sample_index) for a in shown) == [(0, 0), (1, 0), (1, 1)]


def test_next_sends_a_k_sets_answers_in_display_order(ranking_round, annotator_client):
    data = lease(annotator_client, ranking_round.campaign_id)
    comparison = Comparison.objects.get(pk=data["comparison"])
    texts = dict(Answer.objects.filter(pk__in=comparison.answers).values_list("pk", "text"))
    assert [a["text"] for a in data["answers"]] == [texts[pk] for pk in comparison.answers]
    assert (data["response_a"], data["response_b"]) == (data["answers"][0]["text"], data["answers"][1]["text"])
    assert all(a["truncated"] is False for a in data["answers"])
    # blind, as a pair: nothing says who wrote which answer
    body = annotator_client.post(f"/api/campaigns/{ranking_round.campaign_id}/next/").content.decode()
    for leak in ("candidate", "baseline", "policy", "version", "sha256", "/nonexistent/store", "sample_index"):
        assert leak not in body


def test_next_sends_no_answers_list_for_a_pair(open_round, annotator_client):
    assert lease(annotator_client, open_round.campaign_id)["answers"] is None


def test_a_ranking_with_ties_is_stored_and_marks_the_lease_done(ranking_round, annotator_client, annotator):
    comparison = lease(annotator_client, ranking_round.campaign_id)["comparison"]
    answer = rank(annotator_client, comparison, [[3], [1, 4], [2]], time_on_task_ms=9000)
    assert answer.status_code == 201, answer.content
    assert answer.data["choice"] == "ranking" and answer.data["ranking"] == [[3], [1, 4], [2]]
    rating = Rating.objects.get(pk=answer.data["id"])
    assert (rating.choice, rating.ranking, rating.strength) == ("ranking", [[3], [1, 4], [2]], None)
    assert Comparison.objects.get(pk=comparison).rating_count == 1
    assert Lease.objects.get(annotator=annotator).status == Lease.Status.DONE


def test_the_same_ranking_sent_twice_with_one_key_makes_one_rating(ranking_round, annotator_client):
    comparison = lease(annotator_client, ranking_round.campaign_id)["comparison"]
    key = uuid.uuid4()
    first = rank(annotator_client, comparison, [[1], [2], [3], [4]], key=key)
    second = rank(annotator_client, comparison, [[1], [2], [3], [4]], key=key)
    assert (first.status_code, second.status_code) == (201, 200)
    assert Rating.objects.count() == 1


@pytest.mark.parametrize(
    "ranking, says",
    [
        ([[1], [2], [3]], "leaves out answer 4"),
        ([[1], [2, 3]], "leaves out answer 4"),
        ([[1], [2], [3], [3]], "answer 3 twice"),
        ([[1, 2], [2], [3], [4]], "answer 2 twice"),
        ([[1], [2], [3], [5]], "answers 1..4"),
        ([[0], [1], [2], [3], [4]], "answers 1..4"),
        ([1, 2, 3, 4], "non-empty list"),
        ([[1], [], [2, 3, 4]], "non-empty list"),
        ([], "list of tie groups"),
        ("1234", "list of tie groups"),
        ([["1"], [2], [3], [4]], "whole numbers"),
        ([[True], [2], [3], [4]], "whole numbers"),
    ],
)
def test_a_bad_ranking_is_a_400_that_says_what_is_wrong_and_writes_nothing(
    ranking_round, annotator_client, ranking, says
):
    comparison = lease(annotator_client, ranking_round.campaign_id)["comparison"]
    before = snapshot()
    answer = rank(annotator_client, comparison, ranking)
    assert answer.status_code == 400, answer.content
    assert set(answer.json()) >= {"error", "detail"} and says in answer.json()["detail"], answer.json()
    assert snapshot() == before


@pytest.mark.parametrize(
    "body, says",
    [
        ({"choice": "A", "strength": 2}, "set of 4 answers to rank"),
        ({"choice": "tie"}, "set of 4 answers to rank"),
        ({"ranking": [[1], [2], [3], [4]], "choice": "A"}, "not both"),
        ({"ranking": [[1], [2], [3], [4]], "strength": 2}, "strength"),
        ({"ranking": [[1], [2], [3], [4]], "demonstration": {"text": "x", "origin": "a"}}, "pair's rating"),
        ({"choice": "ranking"}, "comes with a ranking"),
        ({}, "Send choice"),
    ],
)
def test_a_pair_choice_sent_to_a_k_set_and_other_mixes_are_400s_that_write_nothing(
    ranking_round, annotator_client, body, says
):
    comparison = lease(annotator_client, ranking_round.campaign_id)["comparison"]
    before = snapshot()
    answer = annotator_client.post(
        "/api/ratings/", {"comparison": comparison, "idempotency_key": str(uuid.uuid4()), **body}, format="json"
    )
    assert answer.status_code == 400, answer.content
    assert says in answer.json()["detail"], answer.json()
    assert snapshot() == before


ASPECTS = [{"name": "correctness", "question": "Which is correct?", "key": "c"}]


@pytest.mark.parametrize("aspects", [{"correctness": "A"}, {"nonsense": "A"}, "same"])
def test_aspects_with_a_ranking_are_a_400_that_writes_nothing(make_open_round, annotator, annotator_client, aspects):
    """Rankings have no aspects (docs/api.md): aspects sent with one are
    refused whole, even where the campaign has them."""
    round_ = make_open_round(prompts=2, overlap=1, rank_k=4, annotators=[annotator], aspects=ASPECTS)
    comparison = lease(annotator_client, round_.campaign_id)["comparison"]
    before = snapshot()
    answer = rank(annotator_client, comparison, [[1], [2], [3], [4]], aspects=aspects)
    assert answer.status_code == 400, answer.content
    assert "not with a ranking" in answer.json()["detail"], answer.json()
    assert snapshot() == before


def test_required_aspects_ask_nothing_of_a_k_set_but_still_of_a_pair(make_open_round, annotator, annotator_client):
    k_sets = make_open_round(prompts=1, overlap=1, rank_k=3, annotators=[annotator], aspects=ASPECTS,
                             aspects_required=True)
    comparison = lease(annotator_client, k_sets.campaign_id)["comparison"]
    answer = rank(annotator_client, comparison, [[2], [1, 3]])
    assert answer.status_code == 201, answer.content
    assert answer.json()["aspects"] == {} and answer.json()["ranking"] == [[2], [1, 3]]
    pairs = make_open_round(prompts=1, overlap=1, annotators=[annotator], aspects=ASPECTS, aspects_required=True)
    comparison = lease(annotator_client, pairs.campaign_id)["comparison"]
    body = {"comparison": comparison, "choice": "A", "strength": 1, "idempotency_key": str(uuid.uuid4())}
    refused = annotator_client.post("/api/ratings/", body, format="json")
    assert refused.status_code == 400 and "missing: correctness" in refused.json()["detail"]
    body.update(aspects={"correctness": "B"}, idempotency_key=str(uuid.uuid4()))
    assert annotator_client.post("/api/ratings/", body, format="json").status_code == 201


def test_a_ranking_sent_to_a_pair_is_a_400_that_writes_nothing(open_round, annotator_client):
    comparison = lease(annotator_client, open_round.campaign_id)["comparison"]
    before = snapshot()
    answer = rank(annotator_client, comparison, [[1], [2]])
    assert answer.status_code == 400
    assert "is a pair" in answer.json()["detail"]
    assert snapshot() == before


def test_a_k_set_takes_overlap_k_rankings_then_nobody_else_gets_it(make_open_round, make_user, api_client_for):
    people = [make_user("annotator") for _ in range(3)]
    round_ = make_open_round(prompts=1, overlap=2, rank_k=3, annotators=people)
    clients = [api_client_for(p) for p in people]
    for client in clients[:2]:
        comparison = lease(client, round_.campaign_id)["comparison"]
        assert rank(client, comparison, [[2], [1], [3]]).status_code == 201
    assert clients[2].post(f"/api/campaigns/{round_.campaign_id}/next/").status_code == 204
    assert Comparison.objects.get().rating_count == 2


def test_a_ranking_of_a_k_set_the_annotator_does_not_hold_is_a_409(ranking_round, annotator_client, other_annotator):
    comparison = ranking_round.comparisons.order_by("pk").first()
    answer = rank(annotator_client, comparison.pk, [[1], [2], [3], [4]])
    assert answer.status_code == 409
    assert Rating.objects.count() == 0


def test_campaign_rank_k_is_validated_on_create_and_edit(campaign_admin_client):
    create = "/api/campaigns/create/"
    bad = campaign_admin_client.post(create, {"name": "r", "base_model": "x", "rank_k": 5}, format="json")
    assert bad.status_code == 400
    made = campaign_admin_client.post(create, {"name": "r", "base_model": "x", "rank_k": 4}, format="json")
    assert made.status_code == 201 and made.data["rank_k"] == 4
    edit = campaign_admin_client.patch(f"/api/campaigns/{made.data['id']}/", {"rank_k": 1}, format="json")
    assert edit.status_code == 400 and "rank_k" in str(edit.json())
    edit = campaign_admin_client.patch(f"/api/campaigns/{made.data['id']}/", {"rank_k": 3}, format="json")
    assert edit.status_code == 200 and edit.data["rank_k"] == 3


# --- what is computed from rankings ---------------------------------------------


def _ranked(comparison: Comparison, annotator, ranking) -> Rating:
    from tests.factories import ratings_bulk_create

    return ratings_bulk_create([{"comparison": comparison, "annotator": annotator, "choice": "ranking",
                                 "ranking": ranking}])[0]


def test_preference_rows_carry_a_ranking_as_tie_groups_of_answer_texts_best_first(ranking_round, annotator):
    from annotate.selectors.training import preference_rows

    comparison = ranking_round.comparisons.order_by("pk").first()
    _ranked(comparison, annotator, [[2], [4, 1], [3]])
    _ranked(ranking_round.comparisons.order_by("pk").last(), annotator, [[1, 2, 3, 4]])  # all tied: says nothing
    [row] = preference_rows(campaign=ranking_round.campaign)
    text = dict(Answer.objects.filter(pk__in=comparison.answers).values_list("pk", "text"))
    shown = [text[pk] for pk in comparison.answers]
    assert row["ranking"] == [[shown[1]], [shown[3], shown[0]], [shown[2]]]
    assert "chosen" not in row and "rejected" not in row
    assert row["prompt"] == comparison.prompt.text and row["weight"] == 1.0
    assert row["ranking_models"] == [["v0"], ["v0", "v0"], ["v0"]]
    assert (row["comparison_id"], row["annotator_id"], row["round"]) == (comparison.pk, annotator.pk, 0)


def test_exports_carry_rankings_preferences_as_ranking_rows_and_ratings_with_positions_and_models(
    ranking_round, annotator, settings, tmp_path
):
    import csv
    import json

    from annotate.services.exports import export_create

    settings.EXPORT_DIR = str(tmp_path)
    comparison = ranking_round.comparisons.order_by("pk").first()
    _ranked(comparison, annotator, [[2], [4, 1], [3]])
    preferences = export_create(campaign=ranking_round.campaign, kind="preferences", format="jsonl")
    [row] = [json.loads(line) for line in open(preferences.path)]
    assert len(row["ranking"]) == 3 and sum(len(g) for g in row["ranking"]) == 4
    ratings = export_create(campaign=ranking_round.campaign, kind="ratings", format="csv")
    [line] = list(csv.DictReader(open(ratings.path, newline="")))
    assert line["choice"] == "ranking" and json.loads(line["ranking"]) == [[2], [4, 1], [3]]
    assert json.loads(line["k_set_models"]) == ["v0"] * 4


def test_leaderboard_fits_a_ranking_as_its_implied_pairs_weighted_2_over_k(make_user):
    """Against a reference: Bradley-Terry (annotate.stats.ranking) on the
    implied pairs of each ranking, each weighted 2/k, built here by hand."""
    import numpy as np

    from annotate.selectors.leaderboard import campaign_leaderboard
    from annotate.services.evaluation import evaluation_start
    from annotate.stats import ranking as bt
    from tests.factories import evaluation_campaign

    raters = [make_user("annotator") for _ in range(2)]
    campaign, models = evaluation_campaign(models=4, prompts=6, rank_k=4, comparisons_per_round=6, gold_frequency=0)
    evaluation_start(campaign=campaign)
    index = {m.pk: i for i, m in enumerate(models)}
    model_of = dict(Answer.objects.filter(prompt__campaign=campaign).values_list("pk", "external_model_id"))
    rng = np.random.default_rng(0)
    wins = np.zeros((4, 4))
    for comparison in Comparison.objects.filter(round__campaign=campaign):
        shown = [index[model_of[pk]] for pk in comparison.answers]
        for rater in raters:
            # mostly model order (a better than b better than ...), with noise and a tie
            noisy = sorted(range(4), key=lambda p: shown[p] + rng.normal(0, 1.5))
            ranking = [[noisy[0] + 1, noisy[1] + 1], [noisy[2] + 1], [noisy[3] + 1]]
            _ranked(comparison, rater, ranking)
            place = {p: g for g, group in enumerate(ranking) for p in group}
            for x in range(1, 5):
                for y in range(x + 1, 5):
                    i, j = shown[x - 1], shown[y - 1]
                    score = 0.5 if place[x] == place[y] else float(place[x] < place[y])
                    wins[i, j] += 0.5 * score  # weight 2/k = 0.5 at k = 4
                    wins[j, i] += 0.5 * (1 - score)
    board = campaign_leaderboard(campaign=campaign, resamples=0)
    theta = bt.bradley_terry(wins)
    expected = {models[i].name: bt.ELO_BASE + bt.ELO_SCALE * float(theta[i]) for i in range(4)}
    assert {m["name"]: m["score"] for m in board["models"]} == pytest.approx(expected, abs=1e-6)
    assert (board["n_ratings"], board["n_rankings"]) == (12, 12)
    # each ranking of 4 weighs 3 pair judgements: every model's n sums to twice that
    assert sum(m["n"] for m in board["models"]) == pytest.approx(12 * 3 * 2)


def test_quality_reads_rankings_as_ordinal_data_beside_the_pairs_figures(make_open_round, annotator, other_annotator):
    from annotate.selectors.quality import campaign_quality

    rankings = ([[1], [2], [3], [4]], [[4], [3], [2, 1]], [[2], [1], [4], [3]])
    reversed_ = ([[4], [3], [2], [1]], [[1, 2], [3], [4]], [[3], [4], [1], [2]])
    alphas = []
    for theirs in (rankings, reversed_):
        round_ = make_open_round(prompts=3, overlap=2, rank_k=4, annotators=[annotator, other_annotator])
        for comparison, mine, other in zip(round_.comparisons.order_by("pk"), rankings, theirs):
            _ranked(comparison, annotator, mine)
            _ranked(comparison, other_annotator, other)
        report = campaign_quality(campaign=round_.campaign)
        assert (report["n_rankings"], report["ranking_alpha_units"]) == (6, 12)
        assert report["n_ratings"] == 0 and report["alpha"] is None  # the pairs' figures have no pairs
        alphas.append(report["ranking_alpha"])
    # the same rankings: perfect agreement; every one reversed: below chance
    assert alphas[0] == 1.0 and alphas[1] < 0


def test_an_evaluation_campaign_ranking_3_forms_k_sets_of_3_models_balanced(make_user):
    from collections import Counter

    from annotate.services.evaluation import evaluation_start
    from tests.factories import evaluation_campaign

    campaign, models = evaluation_campaign(models=4, prompts=8, rank_k=3, comparisons_per_round=8, gold_frequency=0)
    round_, added = evaluation_start(campaign=campaign)
    assert added == 8
    shown = Counter()
    for comparison in round_.comparisons.all():
        authors = list(Answer.objects.filter(pk__in=comparison.answers).values_list("external_model_id", flat=True))
        assert len(comparison.answers) == 3 and len(set(authors)) == 3
        shown.update(authors)
    assert max(shown.values()) - min(shown.values()) <= 1, shown


def test_an_evaluation_campaign_ranking_4_with_3_models_is_refused_saying_why():
    from annotate.errors import ValidationFailed
    from annotate.services.evaluation import evaluation_start
    from tests.factories import evaluation_campaign

    campaign, _ = evaluation_campaign(models=3, prompts=4, rank_k=4)
    with pytest.raises(ValidationFailed, match="at least 4 models"):
        evaluation_start(campaign=campaign)


def test_k_set_schedule_never_repeats_a_set_on_a_prompt_and_stops_when_they_run_out():
    from annotate.services.evaluation import k_set_schedule

    answered = {"p1": ["a", "b", "c", "d"], "p2": ["a", "b", "c"], "p3": ["a", "b"]}
    sets = k_set_schedule(answered, 100, 3, seed=1)
    keys = [(p, frozenset(m)) for p, m in sets]
    assert len(keys) == len(set(keys)) == 4 + 1  # C(4,3) on p1, one on p2, none on p3
    again = k_set_schedule(answered, 100, 3, seed=1, earlier=[(p, m) for p, m in sets])
    assert again == []

"""Evaluation campaigns: the pair schedule (balanced over pairs of models and
over prompts, sides random, never a pair twice on a prompt), starting one
(round 0, no training run, no base model), adding comparisons, blind
leases, the API with its access rules, and the console's pages."""
import uuid
from collections import Counter

import pytest

from annotate.errors import Conflict, ValidationFailed
from annotate.models import Campaign, Comparison, GoldPair, Lease, Role, Round, TrainingRun
from annotate.selectors.rounds import round_progress
from annotate.services.evaluation import evaluation_comparisons_add, evaluation_start, pair_schedule
from annotate.services.gold import gold_import
from annotate.services.rounds import round_progress_check
from annotate.training.runs import training_run_start
from tests.factories import (
    CampaignFactory,
    ExternalModelFactory,
    evaluation_campaign,
    external_answers,
    ratings_bulk_create,
)


def pair_counts(schedule) -> Counter:
    return Counter(frozenset((p.a, p.b)) for p in schedule)


# --- pair_schedule: pure, no database ---------------------------------------------------


@pytest.mark.parametrize("n_models", [4, 6, 8])
def test_pair_schedule_compares_every_pair_of_models_equally_often(n_models):
    # given: 200 prompts every model answered
    answered = {f"p{i}": [f"m{k}" for k in range(n_models)] for i in range(200)}
    # when
    schedule = pair_schedule(answered, 1000, seed=1)
    # then: every pair, counts within one of each other
    counts = pair_counts(schedule)
    assert len(schedule) == 1000
    assert len(counts) == n_models * (n_models - 1) // 2
    assert max(counts.values()) - min(counts.values()) <= 1
    # and the prompts are used in turn (1000 over 200 prompts: about 5 each;
    # with 4 models a pair may have met on every least-used prompt already)
    per_prompt = Counter(p.prompt for p in schedule)
    assert len(per_prompt) == 200 and 4 <= min(per_prompt.values()) <= max(per_prompt.values()) <= 6
    # and no pair meets twice on a prompt, nor a model itself
    assert len({(p.prompt, frozenset((p.a, p.b))) for p in schedule}) == 1000
    assert all(p.a != p.b for p in schedule)


def test_pair_schedule_sides_are_random():
    answered = {i: ["x", "y", "z"] for i in range(400)}
    schedule = pair_schedule(answered, 1200, seed=7)
    on_a = Counter(p.a for p in schedule)
    # each model is in 800 comparisons; on side A about half the time
    for model in "xyz":
        assert 330 < on_a[model] < 470


def test_pair_schedule_pairs_a_model_only_on_prompts_it_answered():
    # given: model "late" answered only the even prompts (30 of 60)
    answered = {i: ["a", "b", "c"] + (["late"] if i % 2 == 0 else []) for i in range(60)}
    # when
    schedule = pair_schedule(answered, 150, seed=3)
    # then: its pairs stay on those, and every pair is still level
    assert all(p.prompt % 2 == 0 for p in schedule if "late" in (p.a, p.b))
    counts = pair_counts(schedule)
    assert set(counts.values()) == {25}
    # past 30 each, the pairs with "late" have run out of prompts and the others go on
    more = pair_counts(pair_schedule(answered, 300, seed=3))
    assert {n for pair, n in more.items() if "late" in pair} == {30} and sum(more.values()) == 270


def test_pair_schedule_counts_earlier_comparisons_so_a_new_model_is_paired_first():
    # given: three models compared 30 times per pair, then a fourth arrives
    answered = {i: ["a", "b", "c", "d"] for i in range(100)}
    earlier = pair_schedule({i: ["a", "b", "c"] for i in range(100)}, 90, seed=0)
    # when: 90 more
    schedule = pair_schedule(answered, 90, seed=0, earlier=earlier)
    # then: the new pairs catch up and everything ends level
    assert all("d" in (p.a, p.b) for p in schedule)
    total = pair_counts([*earlier, *schedule])
    assert set(total.values()) == {30}
    # and nothing earlier is made again
    before = {(p.prompt, frozenset((p.a, p.b))) for p in earlier}
    assert not before & {(p.prompt, frozenset((p.a, p.b))) for p in schedule}


def test_pair_schedule_stops_when_the_pairs_run_out_of_prompts():
    answered = {i: ["a", "b", "c"] for i in range(5)}
    schedule = pair_schedule(answered, 100)
    assert len(schedule) == 15  # 5 prompts x 3 pairs
    assert pair_schedule(answered, 10, earlier=schedule) == []


def test_pair_schedule_is_reproducible_for_a_seed():
    answered = {i: ["a", "b", "c", "d"] for i in range(50)}
    assert pair_schedule(answered, 100, seed="s") == pair_schedule(answered, 100, seed="s")
    assert pair_schedule(answered, 100, seed="s") != pair_schedule(answered, 100, seed="t")


# --- starting an evaluation campaign ----------------------------------------------------


@pytest.mark.django_db
def test_evaluation_start_opens_round_0_of_balanced_blind_pairs_without_training():
    # given: 4 models answered 30 prompts; no base model
    campaign, models = evaluation_campaign(models=4, prompts=30, comparisons_per_round=60)
    assert campaign.base_model == ""
    # when
    round_, added = evaluation_start(campaign=campaign)
    # then
    campaign.refresh_from_db()
    assert (round_.index, round_.candidate, round_.baseline, added) == (0, None, None, 60)
    assert campaign.status == Campaign.Status.ACTIVE
    assert not TrainingRun.objects.filter(campaign=campaign).exists()
    comparisons = list(round_.comparisons.select_related("response_a", "response_b"))
    assert len(comparisons) == 60
    assert all(c.candidate_is_a is None for c in comparisons)
    pairs = Counter(frozenset((c.response_a.external_model_id, c.response_b.external_model_id)) for c in comparisons)
    assert len(pairs) == 6 and set(pairs.values()) == {10}
    # each side's answer is its model's answer to the comparison's prompt
    assert all(c.response_a.prompt_id == c.prompt_id == c.response_b.prompt_id for c in comparisons)
    assert round_progress(round_=round_)["candidate_version"] is None


@pytest.mark.django_db
def test_evaluation_start_mixes_in_gold_pairs_with_no_candidate_side():
    campaign, _ = evaluation_campaign(models=3, prompts=20, comparisons_per_round=30, gold_frequency=0.2)
    body = b"".join(f'{{"prompt": "g{i}?", "chosen": "right", "rejected": "wrong"}}\n'.encode() for i in range(10))
    gold_import(campaign=campaign, data=body)
    # when
    round_, added = evaluation_start(campaign=campaign)
    # then: 30 scheduled pairs (gold prompts are not among the models' prompts), 6 gold
    gold = round_.comparisons.exclude(gold_choice="")
    assert added == 30 and gold.count() == 6
    assert all(c.candidate_is_a is None for c in gold)
    assert GoldPair.objects.filter(campaign=campaign).count() == 10


@pytest.mark.django_db
def test_evaluation_start_twice_returns_the_first_round():
    campaign, _ = evaluation_campaign(models=2, prompts=5)
    first, _ = evaluation_start(campaign=campaign)
    again, added = evaluation_start(campaign=campaign)
    assert (again.pk, added) == (first.pk, 0)
    assert Round.objects.filter(campaign=campaign).count() == 1


@pytest.mark.django_db
def test_evaluation_start_needs_two_models_that_answered_the_same_prompts():
    campaign, _ = evaluation_campaign(models=1, prompts=5)
    with pytest.raises(ValidationFailed, match="at least two models"):
        evaluation_start(campaign=campaign)
    assert not campaign.rounds.exists()
    empty = CampaignFactory(kind=Campaign.Kind.EVALUATION, base_model="", status=Campaign.Status.DRAFT)
    with pytest.raises(ValidationFailed, match="no prompts"):
        evaluation_start(campaign=empty)


@pytest.mark.django_db
def test_a_complete_evaluation_round_never_starts_training(make_user):
    annotator = make_user(Role.ANNOTATOR)
    campaign, _ = evaluation_campaign(models=2, prompts=3, overlap=1, auto_train=True, annotators=[annotator])
    round_, _ = evaluation_start(campaign=campaign)
    ratings_bulk_create({"comparison": c, "annotator": annotator, "choice": "A", "strength": 2}
                        for c in round_.comparisons.all())
    # when
    assert round_progress_check(round_id=round_.pk) is None
    # then
    with pytest.raises(Conflict, match="evaluation campaign"):
        training_run_start(campaign=campaign)
    assert not TrainingRun.objects.filter(campaign=campaign).exists()


# --- adding comparisons -----------------------------------------------------------------


@pytest.mark.django_db
def test_adding_comparisons_extends_the_round_and_keeps_the_balance():
    campaign, models = evaluation_campaign(models=3, prompts=40, comparisons_per_round=10)
    round_, _ = evaluation_start(campaign=campaign)
    # when: a fourth model arrives, then 50 more comparisons
    late = ExternalModelFactory(campaign=campaign, name="late")
    external_answers(late, campaign.prompts.all())
    same, added = evaluation_comparisons_add(campaign=campaign, count=50)
    # then: the same round, and every pair of the four within one of the others
    assert (same.pk, added) == (round_.pk, 50)
    comparisons = Comparison.objects.filter(round=round_).select_related("response_a", "response_b")
    pairs = Counter(frozenset((c.response_a.external_model_id, c.response_b.external_model_id)) for c in comparisons)
    assert len(pairs) == 6 and max(pairs.values()) - min(pairs.values()) <= 1
    assert sum(pairs.values()) == 60


@pytest.mark.django_db
def test_adding_comparisons_when_every_pair_met_on_every_prompt_is_a_409():
    campaign, _ = evaluation_campaign(models=2, prompts=3, comparisons_per_round=3)
    evaluation_start(campaign=campaign)
    with pytest.raises(Conflict, match="already been compared"):
        evaluation_comparisons_add(campaign=campaign, count=5)


@pytest.mark.django_db
def test_adding_comparisons_is_refused_for_loop_campaigns_and_before_start(make_open_round):
    loop = make_open_round(prompts=2).campaign
    with pytest.raises(Conflict, match="loop campaign"):
        evaluation_comparisons_add(campaign=loop, count=5)
    campaign, _ = evaluation_campaign(models=2, prompts=3)
    with pytest.raises(Conflict, match="start it first"):
        evaluation_comparisons_add(campaign=campaign, count=5)
    with pytest.raises(ValidationFailed, match="count"):
        evaluation_comparisons_add(campaign=campaign, count=0)


# --- annotators: blind --------------------------------------------------------------------


@pytest.mark.django_db
def test_an_evaluation_comparison_is_leased_blind_and_rated(annotator, annotator_client):
    campaign, models = evaluation_campaign(
        models=3, prompts=4, overlap=1, annotators=[annotator], text=lambda m, p: f"An answer to {p.external_id}."
    )
    evaluation_start(campaign=campaign)
    # when
    answer = annotator_client.post(f"/api/campaigns/{campaign.pk}/next/")
    # then: the comparison, and nothing of who wrote which side
    assert answer.status_code == 200
    body = answer.content.decode()
    assert set(answer.data) == {
        "comparison", "round", "prompt", "prompt_turns", "response_a", "response_b", "response_a_truncated",
        "response_b_truncated", "answers", "leased_until", "progress", "round_progress",
    }
    for leak in ("model", "external", "candidate", "baseline", "version", *(m.name for m in models)):
        assert leak not in body
    rated = annotator_client.post(
        "/api/ratings/",
        {"comparison": answer.data["comparison"], "choice": "B", "strength": 1, "idempotency_key": str(uuid.uuid4())},
        format="json",
    )
    assert rated.status_code == 201, rated.data
    assert Lease.objects.get(annotator=annotator).status == Lease.Status.DONE


# --- the API ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_campaign_create_api_makes_an_evaluation_campaign_without_a_base_model(campaign_admin_client):
    answer = campaign_admin_client.post("/api/campaigns/create/", {"name": "Eval", "kind": "evaluation"}, format="json")
    assert answer.status_code == 201, answer.data
    assert (answer.data["kind"], answer.data["base_model"], answer.data["reference_model"]) == ("evaluation", "", None)
    # a loop campaign still needs one, and says so
    loop = campaign_admin_client.post("/api/campaigns/create/", {"name": "Loop"}, format="json")
    assert loop.status_code == 400
    assert "base_model" in loop.data["errors"]
    assert not Campaign.objects.filter(name="Loop").exists()
    # the kind is fixed once the campaign exists
    patched = campaign_admin_client.patch(f"/api/campaigns/{answer.data['id']}/", {"kind": "loop"}, format="json")
    assert patched.status_code == 400
    assert Campaign.objects.get(name="Eval").kind == Campaign.Kind.EVALUATION


@pytest.mark.django_db
def test_start_and_comparisons_api_of_an_evaluation_campaign(
    campaign_admin_client, ml_engineer_client, annotator_client, other_campaign_admin, api_client_for
):
    campaign, _ = evaluation_campaign(models=3, prompts=10, comparisons_per_round=6)
    campaign.admins.add(campaign_admin_client.user)
    base = f"/api/campaigns/{campaign.pk}"
    # not started: nothing to add to
    assert campaign_admin_client.post(f"{base}/comparisons/", {"count": 3}, format="json").status_code == 409
    # when
    started = campaign_admin_client.post(f"{base}/start/")
    # then: round 0 is open at once, no training run
    assert started.status_code == 200, started.data
    assert (started.data["round"], started.data["comparisons"], started.data["status"]) == (0, 6, "collecting")
    added = ml_engineer_client.post(f"{base}/comparisons/", {"count": 9}, format="json")
    assert added.status_code == 201, added.data
    assert (added.data["round"], added.data["added"], added.data["comparisons"]) == (0, 9, 15)
    # bad input, other roles and other admins
    assert campaign_admin_client.post(f"{base}/comparisons/", {"count": 0}, format="json").status_code == 400
    assert annotator_client.post(f"{base}/comparisons/", {"count": 3}, format="json").status_code == 403
    assert api_client_for(other_campaign_admin).post(f"{base}/comparisons/", {"count": 3}, format="json").status_code == 404
    assert Comparison.objects.filter(round__campaign=campaign).count() == 15
    # and the leaderboard of an evaluation round copes with its null candidate
    board = ml_engineer_client.get(f"{base}/leaderboard/", {"resamples": 0})
    assert board.status_code == 200
    assert board.data["rounds"][0]["candidate_version"] is None and board.data["kind"] == "evaluation"


# --- the console ------------------------------------------------------------------------


@pytest.mark.django_db
def test_console_creates_starts_and_extends_an_evaluation_campaign(client, campaign_admin):
    client.force_login(campaign_admin)
    # when: the new-campaign form, evaluation, no base model
    created = client.post("/console/campaigns/new/", {
        "name": "Eval in console", "kind": "evaluation", "overlap": 2, "comparisons_per_round": 4,
        "lease_ttl_seconds": 600, "gold_frequency": 0, "gold_min_accuracy": 0.6, "gold_min_count": 5,
    })
    # then
    campaign = Campaign.objects.get(name="Eval in console")
    assert created.status_code == 302, created.content.decode()[:2000]
    assert campaign.kind == Campaign.Kind.EVALUATION and campaign.base_model == ""
    page = client.get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert 'id="evaluation-start"' in page and "Recent training runs" not in page
    # given its models' answers, start it and add comparisons from the overview
    prompts = [campaign.prompts.create(external_id=f"q{i}", text=f"Question {i}?") for i in range(6)]
    for name in ("alpha", "beta", "gamma"):
        external_answers(ExternalModelFactory(campaign=campaign, name=name), prompts)
    assert client.post(f"/console/campaigns/{campaign.pk}/evaluation/", {"action": "start"}).status_code == 302
    assert client.post(
        f"/console/campaigns/{campaign.pk}/evaluation/", {"action": "add", "count": "5"}
    ).status_code == 302
    assert Comparison.objects.filter(round__campaign=campaign).count() == 9
    page = client.get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert "3 models" in page and 'id="evaluation-add"' in page
    assert client.get("/console/").status_code == 200
    # a bad count is a 400 that says so, and adds nothing
    refused = client.post(f"/console/campaigns/{campaign.pk}/evaluation/", {"action": "add", "count": "lots"})
    assert refused.status_code == 400 and "count" in refused.content.decode()
    assert Comparison.objects.filter(round__campaign=campaign).count() == 9


@pytest.mark.django_db
def test_console_evaluation_actions_are_for_its_admins(client, ml_engineer, make_user):
    campaign, _ = evaluation_campaign(models=2, prompts=3)
    client.force_login(ml_engineer)
    refused = client.post(f"/console/campaigns/{campaign.pk}/evaluation/", {"action": "start"})
    assert refused.status_code == 403
    assert not campaign.rounds.exists()
    stranger = make_user(Role.CAMPAIGN_ADMIN)
    client.force_login(stranger)
    assert client.post(f"/console/campaigns/{campaign.pk}/evaluation/", {"action": "start"}).status_code == 404

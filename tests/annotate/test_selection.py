"""Selection in the product (docs/training.md, "Selection"): the campaign
settings and their 400s, the fallback to random (said in the round) while no
reward model can score, and real rounds on the tiny model whose comparisons
the generate stage picked with a reward model trained on the spot
(uncertainty, spread, the exploration share), gold pairs and overlap as
before, the reasons kept from annotators and shown to admins (API, console)."""
import uuid

import pytest
from django.test import Client, override_settings

from annotate.models import Answer, Campaign, Comparison, GoldPair, PolicyVersion, RewardModelVersion, Round, TrainingRun
from annotate.selectors.rounds import round_progress
from annotate.services.rounds import round_prompts
from rlhf.store import ModelStore
from tests.factories import CampaignFactory, PolicyVersionFactory, PromptFactory, AnswerFactory, ratings_bulk_create

pytestmark = pytest.mark.django_db

TINY = {
    "reward": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "max_length": 64},
    "dpo": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "max_length": 64},
    "generate": {"max_new_tokens": 12, "batch_size": 32},
}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    from rlhf.tiny import build_tiny_model

    texts = [f"question {i}: what is {i} plus one? answer: {i + 1}." for i in range(200)]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, seed=0)


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    with override_settings(MODEL_STORE=str(root)):
        yield ModelStore(root)


# --- settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"selection": "smart"}, "selection"),
        ({"selection_exploration": 1.5}, "selection_exploration"),
        ({"selection_exploration": -0.1}, "selection_exploration"),
        ({"selection_exploration": "a lot"}, "selection_exploration"),
        ({"selection_pool": 0}, "selection_pool"),
        ({"selection_pool": 17}, "selection_pool"),
        ({"selection_pool": "two"}, "selection_pool"),
    ],
)
def test_bad_selection_settings_are_a_400_naming_the_field_and_change_nothing(
    open_round, campaign_admin_client, fields, named
):
    campaign = open_round.campaign
    answer = campaign_admin_client.patch(f"/api/campaigns/{campaign.pk}/", fields, format="json")
    assert answer.status_code == 400, answer.content
    body = answer.json()
    assert set(body) >= {"error", "detail"} and named in str(body)
    campaign.refresh_from_db()
    assert (campaign.selection, campaign.selection_exploration, campaign.selection_pool) == ("random", 0.2, 2)


def test_a_new_campaign_with_a_bad_selection_is_a_400_and_is_not_created(campaign_admin_client):
    answer = campaign_admin_client.post("/api/campaigns/create/", {"name": "sel", "base_model": "m",
                                        "selection": "uncertainty", "selection_pool": 99}, format="json")
    assert answer.status_code == 400 and "selection_pool" in str(answer.json())
    assert not Campaign.objects.filter(name="sel").exists()


def test_an_evaluation_campaign_cannot_select_by_reward_model(campaign_admin_client):
    answer = campaign_admin_client.post("/api/campaigns/create/", {"name": "ev", "kind": "evaluation",
                                        "selection": "spread"}, format="json")
    assert answer.status_code == 400 and "loop campaigns" in answer.json()["errors"]["selection"]
    assert not Campaign.objects.filter(name="ev").exists()


def test_selection_settings_are_stored_and_returned(open_round, campaign_admin_client):
    campaign = open_round.campaign
    answer = campaign_admin_client.patch(
        f"/api/campaigns/{campaign.pk}/", {"selection": "spread", "selection_exploration": 0.3, "selection_pool": 4},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    assert (answer.data["selection"], answer.data["selection_exploration"], answer.data["selection_pool"]) == (
        "spread", 0.3, 4)
    created = campaign_admin_client.post("/api/campaigns/create/", {"name": "new", "base_model": "m"}, format="json")
    assert (created.data["selection"], created.data["selection_exploration"], created.data["selection_pool"]) == (
        "random", 0.2, 2)


def test_the_console_form_saves_selection_settings_and_shows_a_bad_one_by_its_field(open_round, campaign_admin):
    from frontend.console.campaigns import _campaign_values

    campaign = open_round.campaign
    client = Client()
    client.force_login(campaign_admin)
    page = client.get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert 'name="selection"' in page and 'name="selection_exploration"' in page and 'name="selection_pool"' in page
    values = {k: ("" if v is None else v) for k, v in _campaign_values(campaign).items()}
    values.pop("auto_train")
    values.update(selection="uncertainty", selection_exploration="0.1", selection_pool="3")
    assert client.post(f"/console/campaigns/{campaign.pk}/", values).status_code == 302
    campaign.refresh_from_db()
    assert (campaign.selection, campaign.selection_exploration, campaign.selection_pool) == ("uncertainty", 0.1, 3)
    values["selection_pool"] = "0"
    answer = client.post(f"/console/campaigns/{campaign.pk}/", values)
    assert answer.status_code == 400 and 'id="err-selection_pool"' in answer.content.decode()
    campaign.refresh_from_db()
    assert campaign.selection_pool == 3


# --- falling back to random -------------------------------------------------------


def _bootstrapped(prompts=6, **fields):
    """A loop campaign as the bootstrap run leaves it before opening round 0:
    v0 answered every prompt twice, a gold pair in the pool."""
    campaign = CampaignFactory(comparisons_per_round=4, gold_frequency=0.5, **fields)
    v0 = PolicyVersionFactory(campaign=campaign, version=0)
    for prompt in PromptFactory.create_batch(prompts, campaign=campaign):
        AnswerFactory(prompt=prompt, policy_version=v0, sample_index=0)
        AnswerFactory(prompt=prompt, policy_version=v0, sample_index=1)
    gold_prompt = PromptFactory(campaign=campaign)
    GoldPair.objects.create(
        campaign=campaign, prompt=gold_prompt, external_id="g1",
        chosen=AnswerFactory(prompt=gold_prompt, policy_version=None, text="good"),
        rejected=AnswerFactory(prompt=gold_prompt, policy_version=None, text="bad"),
    )
    run = TrainingRun.objects.create(campaign=campaign, kind=TrainingRun.Kind.BOOTSTRAP, stage="open")
    return campaign, run


def test_round_0_of_an_uncertainty_campaign_opens_at_once_at_random_and_says_why():
    from annotate.training.steps import stage_open_round0

    # given: no reward model exists
    campaign, run = _bootstrapped(selection=Campaign.Selection.UNCERTAINTY)
    # when
    outputs = stage_open_round0(run, reporter=None)
    # then: the prompts in turn, every regular comparison "random", the round saying why
    round_ = Round.objects.get(campaign=campaign, index=0)
    assert round_.selection_strategy == "random"
    assert round_.selection_note == "uncertainty asked; no reward model yet: random (the prompts in turn)"
    assert outputs["selection"]["note"] == round_.selection_note
    regular = round_.comparisons.filter(gold_choice="")
    assert sorted(regular.values_list("prompt_id", flat=True)) == sorted(
        p.pk for p in round_prompts(campaign=campaign, index=0))
    assert set(regular.values_list("selection_reason", "selection_score")) == {("random", None)}
    # then: gold pairs as before (round(0.5 * 4) of them, capped by the pool of one), reason gold
    gold = round_.comparisons.exclude(gold_choice="")
    assert list(gold.values_list("selection_reason", flat=True)) == ["gold"]


def test_a_random_campaign_records_random_with_no_note():
    from annotate.training.steps import stage_open_round0

    campaign, run = _bootstrapped()
    stage_open_round0(run, reporter=None)
    round_ = Round.objects.get(campaign=campaign, index=0)
    assert (round_.selection_strategy, round_.selection_note) == ("random", "")


def test_a_reward_model_that_fails_its_sha256_is_passed_over_and_said(store, tiny_base):
    from annotate.training.selection import selection_plan

    campaign, _ = _bootstrapped(selection=Campaign.Selection.SPREAD)
    published = store.publish(tiny_base, f"campaign-{campaign.pk}/reward-x")
    RewardModelVersion.objects.create(campaign=campaign, version=1, path=published.path, sha256="0" * 64)
    plan = selection_plan(campaign=campaign)
    assert (plan.strategy, plan.pool, plan.reward) == ("random", 1, None)
    assert "reward model v1 failed its sha256 check" in plan.note
    # and a verified one is used, with the campaign's pool
    RewardModelVersion.objects.create(campaign=campaign, version=2, path=published.path, sha256=published.sha256)
    plan = selection_plan(campaign=campaign)
    assert (plan.strategy, plan.pool, plan.reward.version, plan.note) == ("spread", 2, 2, "")


def test_picks_open_the_round_with_their_samples_reasons_and_scores_and_the_reference_meets_the_picked_prompts():
    from annotate.services.rounds import round_open
    from tests.factories import ExternalModelFactory, external_answers

    # given: v0 and v1 answered 6 prompts, a reference model answered them all
    campaign = CampaignFactory(comparisons_per_round=2, gold_frequency=0.0)
    v0 = PolicyVersionFactory(campaign=campaign, version=0)
    v1 = PolicyVersionFactory(campaign=campaign, version=1, parent=v0)
    prompts = PromptFactory.create_batch(6, campaign=campaign)
    for p in prompts:
        for v in (v0, v1):
            AnswerFactory(prompt=p, policy_version=v, sample_index=0)
    reference = ExternalModelFactory(campaign=campaign)
    external_answers(reference, prompts)
    campaign.reference_model = reference
    campaign.save(update_fields=["reference_model"])
    picks = [{"prompt": prompts[4].pk, "candidate_sample": 0, "baseline_sample": 0, "reason": "spread", "score": 0.7},
             {"prompt": prompts[1].pk, "candidate_sample": 0, "baseline_sample": 0, "reason": "exploration",
              "score": None}]
    # when
    round_ = round_open(campaign=campaign, index=1, candidate=v1, baseline=v0,
                        selection={"strategy": "spread", "note": "", "picks": picks})
    # then: the picked prompts, in pick order, with their reasons; the reference on those prompts only
    rows = list(round_.comparisons.order_by("pk").values_list("prompt_id", "selection_reason", "selection_score"))
    regular = [r for r in rows if r[1] != "reference"]
    assert regular == [(prompts[4].pk, "spread", 0.7), (prompts[1].pk, "exploration", None)]
    assert sorted(r[0] for r in rows if r[1] == "reference") == sorted([prompts[1].pk, prompts[4].pk])
    assert all(score is None for _, reason, score in rows if reason == "reference")
    assert round_.selection_strategy == "spread"


# --- real rounds on the tiny model ---------------------------------------------------


def _trained_world(make_open_round, annotator, store, tiny_base, corrupt_reward=False,
                   **fields) -> tuple[Round, TrainingRun]:
    """Round 0 of a DPO campaign on the tiny model, 4 comparisons of 12
    prompts rated, a gold pair in the pool; then a real train run through
    every stage (its reward model trained on those ratings picks round 1)."""
    from annotate.training.executor import training_stage_execute
    from annotate.training.runs import training_run_start

    round_ = make_open_round(prompts=12, overlap=1, annotators=[annotator], training_config=TINY,
                             method=Campaign.Method.DPO, comparisons_per_round=4, gold_frequency=0.25, **fields)
    campaign = round_.campaign
    published = store.publish(tiny_base, f"campaign-{campaign.pk}/policy-v0")
    PolicyVersion.objects.filter(pk=round_.candidate_id).update(path=published.path, sha256=published.sha256)
    gold_prompt = PromptFactory(campaign=campaign)
    GoldPair.objects.create(
        campaign=campaign, prompt=gold_prompt, external_id="g1",
        chosen=AnswerFactory(prompt=gold_prompt, policy_version=None, text="answer: 2."),
        rejected=AnswerFactory(prompt=gold_prompt, policy_version=None, text="no idea"),
    )
    ratings_bulk_create(
        {"comparison": c, "annotator": annotator, "choice": "A" if i % 2 else "B", "strength": 2,
         "idempotency_key": uuid.uuid4()}
        for i, c in enumerate(round_.comparisons.filter(gold_choice="").order_by("pk"))
    )
    run = training_run_start(campaign=campaign)
    for stage in ("snapshot", "sft", "reward", "policy", "generate", "open"):
        if stage == "generate" and corrupt_reward:
            RewardModelVersion.objects.filter(training_run=run).update(sha256="0" * 64)
        assert training_stage_execute(run_id=run.pk, stage=stage) is None
        run.refresh_from_db()
        assert run.stages[stage]["status"] == "succeeded", run.error
    return Round.objects.get(campaign=campaign, index=1), run


def _check_round(round_: Round, run: TrainingRun, strategy: str) -> list[Comparison]:
    """What every selecting round keeps: the picks recorded by the generate
    stage are the round's regular comparisons, new policy against previous,
    from the pool it answered; gold pairs and overlap as before."""
    campaign = round_.campaign
    outputs = run.stages["generate"]["outputs"]
    selection = outputs["selection"]
    assert (round_.selection_strategy, round_.selection_note) == (strategy, "")
    assert (selection["strategy"], selection["reward_version"]) == (strategy, 1)
    # the pool: selection_pool (3) x 4 prompts = all 12, each answered by both policies
    pool = round_prompts(campaign=campaign, index=1, pool=3)
    assert outputs["prompts"] == selection["pool"] == len(pool) == 12
    for policy in (round_.candidate, round_.baseline):
        assert Answer.objects.filter(policy_version=policy, prompt__in=pool, sample_index=0).count() == 12
    regular = list(round_.comparisons.filter(gold_choice="").select_related("response_a", "response_b").order_by("pk"))
    assert [(c.prompt_id, c.selection_reason) for c in regular] == [(p["prompt"], p["reason"]) for p in selection["picks"]]
    assert len(regular) == 4 and {c.prompt_id for c in regular} <= {p.pk for p in pool}
    for c in regular:
        new, old = (c.response_a, c.response_b) if c.candidate_is_a else (c.response_b, c.response_a)
        assert (new.policy_version_id, old.policy_version_id) == (round_.candidate_id, round_.baseline_id)
        assert (new.sample_index, old.sample_index) == (0, 0)  # the answers generated, not round 0's second sample
    # a fifth of 4 picks rounds to 1 random one (exploration 0.2), the rest by the strategy with a score
    reasons = [c.selection_reason for c in regular]
    assert reasons.count("exploration") == 1 and reasons.count(strategy) == 3
    for c in regular:
        assert (c.selection_score is None) == (c.selection_reason == "exploration")
    # gold pairs as before: round(0.25 x 4) = 1, reason gold; overlap k unchanged
    assert list(round_.comparisons.exclude(gold_choice="").values_list("selection_reason", flat=True)) == ["gold"]
    assert round_progress(round_=round_)["target_ratings"] == 4 * campaign.overlap
    return regular


def test_a_spread_round_opens_with_the_prompts_whose_answers_the_reward_model_tells_furthest_apart(
    make_open_round, annotator, store, tiny_base, enqueued
):
    from rlhf.scoring import score

    round_, run = _trained_world(make_open_round, annotator, store, tiny_base, selection=Campaign.Selection.SPREAD,
                                 selection_pool=3)
    regular = _check_round(round_, run, "spread")
    # then: each spread score is its pair's reward gap under the run's reward model, and no prompt left
    # out of the round had a wider gap than the narrowest spread pick
    reward = RewardModelVersion.objects.get(training_run=run)
    pool = round_prompts(campaign=round_.campaign, index=1, pool=3)
    texts = {(a.prompt_id, a.policy_version_id): a.text for a in Answer.objects.filter(prompt__in=pool, sample_index=0)}
    prompts = [p.content for p in pool for _ in (0, 1)]
    answers = [texts[(p.pk, v)] for p in pool for v in (round_.candidate_id, round_.baseline_id)]
    rewards = score(reward.path, prompts, answers)
    gap = {p.pk: abs(rewards[2 * i] - rewards[2 * i + 1]) for i, p in enumerate(pool)}
    spread = [c for c in regular if c.selection_reason == "spread"]
    for c in spread:
        assert c.selection_score == pytest.approx(gap[c.prompt_id], abs=1e-4)
    picked = {c.prompt_id for c in regular}
    assert min(gap[c.prompt_id] for c in spread) >= max(g for pk, g in gap.items() if pk not in picked) - 1e-4


def test_an_uncertainty_round_opens_with_scored_picks_and_the_exploration_share(
    make_open_round, annotator, store, tiny_base, enqueued
):
    round_, run = _trained_world(make_open_round, annotator, store, tiny_base,
                                 selection=Campaign.Selection.UNCERTAINTY, selection_pool=3)
    regular = _check_round(round_, run, "uncertainty")
    scores = [c.selection_score for c in regular if c.selection_reason == "uncertainty"]
    assert all(s >= 0 for s in scores)


# --- who sees it -------------------------------------------------------------------


def _selected(open_round):
    """open_round with its comparisons marked as an uncertainty round would."""
    Round.objects.filter(pk=open_round.pk).update(selection_strategy="uncertainty")
    for i, c in enumerate(open_round.comparisons.order_by("pk")):
        Comparison.objects.filter(pk=c.pk).update(selection_reason="uncertainty" if i else "exploration",
                                                  selection_score=0.4321 + i if i else None)
    return open_round


def test_the_annotator_never_sees_why_a_comparison_was_chosen(open_round, annotator_client):
    _selected(open_round)
    answers = [annotator_client.post(f"/api/campaigns/{open_round.campaign_id}/next/"),
               annotator_client.get(f"/api/campaigns/{open_round.campaign_id}/progress/"),
               annotator_client.get("/api/campaigns/")]
    for answer in answers:
        assert answer.status_code == 200
        text = answer.content.decode()
        for word in ("selection", "uncertainty", "exploration", "4321"):
            assert word not in text, (word, text)
    assert answers[0].json()["comparison"]


def test_the_rounds_api_gives_admins_each_rounds_reasons_and_each_comparisons_score(
    open_round, campaign_admin_client, annotator_client, django_assert_max_num_queries
):
    _selected(open_round)
    campaign_id = open_round.campaign_id
    with django_assert_max_num_queries(8):
        answer = campaign_admin_client.get(f"/api/campaigns/{campaign_id}/rounds/")
    assert answer.status_code == 200
    (row,) = answer.json()
    assert row["selection"]["strategy"] == "uncertainty"
    reasons = row["selection"]["reasons"]
    assert reasons["exploration"]["count"] == 1 and reasons["exploration"]["score_mean"] is None
    assert reasons["uncertainty"]["count"] == 2
    assert reasons["uncertainty"]["score_min"] == pytest.approx(1.4321)
    assert reasons["uncertainty"]["score_max"] == pytest.approx(2.4321)
    page = campaign_admin_client.get(f"/api/campaigns/{campaign_id}/rounds/0/comparisons/?limit=2&offset=1").json()
    assert page["count"] == 3 and [c["selection_reason"] for c in page["comparisons"]] == ["uncertainty"] * 2
    assert page["comparisons"][0]["selection_score"] == pytest.approx(1.4321)
    assert campaign_admin_client.get(f"/api/campaigns/{campaign_id}/rounds/7/comparisons/").status_code == 400
    assert annotator_client.get(f"/api/campaigns/{campaign_id}/rounds/").status_code == 403
    assert annotator_client.get(f"/api/campaigns/{campaign_id}/rounds/0/comparisons/").status_code == 403


def test_the_overview_shows_each_rounds_reasons_scores_and_note(open_round, campaign_admin):
    _selected(open_round)
    Round.objects.filter(pk=open_round.pk).update(selection_note="spread asked; no reward model yet")
    client = Client()
    client.force_login(campaign_admin)
    page = client.get(f"/console/campaigns/{open_round.campaign_id}/").content.decode()
    assert 'id="selection-rounds"' in page and 'id="chart-selection"' in page
    assert 'data-reason="uncertainty">uncertainty 2' in page and "1.432–2.432" in page
    assert 'data-reason="exploration">exploration 1' in page
    assert "spread asked; no reward model yet" in page


def test_a_train_run_without_a_verified_reward_model_opens_the_next_round_at_once_at_random(
    make_open_round, annotator, store, tiny_base, enqueued
):
    # given: the run's reward model fails its sha256 check when the generate stage looks for one
    round_, run = _trained_world(make_open_round, annotator, store, tiny_base, corrupt_reward=True,
                                 selection=Campaign.Selection.UNCERTAINTY, selection_pool=3)
    # then: round 1 opened anyway, the prompts in turn, only those answered, and it says why
    assert round_.selection_strategy == "random"
    assert round_.selection_note == (
        "uncertainty asked; no verified reward model (reward model v1 failed its sha256 check): "
        "random (the prompts in turn)")
    in_turn = round_prompts(campaign=round_.campaign, index=1)
    assert run.stages["generate"]["outputs"]["prompts"] == len(in_turn) == 4
    regular = round_.comparisons.filter(gold_choice="")
    assert sorted(regular.values_list("prompt_id", flat=True)) == sorted(p.pk for p in in_turn)
    assert set(regular.values_list("selection_reason", flat=True)) == {"random"}
    assert Answer.objects.filter(policy_version=round_.candidate).count() == 4

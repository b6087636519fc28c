"""Simulated raters' services (annotate/services/simulation.py): their
accounts, the management command, the Celery task's step, the staff API
that starts them, a reward model version as the preference, and the
in-process client answering as the annotator API does."""
import json
import time
import uuid
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from annotate import tasks
from annotate.errors import Conflict
from annotate.models import Campaign, Membership, Rating, RewardModelVersion, Role
from annotate.services.simulation import (
    ServiceRaterClient,
    simulated_raters_ensure,
    simulation_config_build,
    simulation_run,
    simulation_step,
)
from annotate.simulation.clients import HttpRaterClient
from annotate.simulation.raters import SimulationConfig
from tests.annotate.simulation.campaigns import campaign_with_round, open_next_round
from bench.data import DATA
from tests.factories import CampaignFactory

User = get_user_model()


# --- accounts, the management command, the Celery task's step ------------------------


@pytest.mark.django_db
def test_simulated_raters_are_annotators_marked_simulated_and_in_the_pool():
    campaign = CampaignFactory()
    accounts = simulated_raters_ensure(campaign=campaign, config=SimulationConfig(raters=2, label="careful"))
    assert [name for name, _ in accounts] == [f"sim-c{campaign.pk}-careful0", f"sim-c{campaign.pk}-careful1"]
    for name, token in accounts:
        user = User.objects.get(username=name)
        assert {g.name for g in user.groups.all()} == {Role.ANNOTATOR, "simulated"}
        assert not user.has_usable_password() and user.auth_token.key == token
    assert Membership.objects.filter(campaign=campaign, status="active").count() == 2
    # Again: the same accounts, nothing new.
    assert simulated_raters_ensure(campaign=campaign, config=SimulationConfig(raters=2, label="careful")) == accounts
    assert User.objects.filter(username__startswith="sim-").count() == 2


@pytest.mark.django_db
def test_simulated_raters_never_take_over_a_persons_account(make_user):
    campaign = CampaignFactory()
    make_user(Role.ANNOTATOR, username=f"sim-c{campaign.pk}-r0")
    with pytest.raises(Conflict, match="belong to people"):
        simulated_raters_ensure(campaign=campaign, config=SimulationConfig(raters=1))


@pytest.mark.django_db
def test_management_command_rates_the_open_round_and_prints_a_summary():
    campaign = campaign_with_round(prompts=4, overlap=2)
    out = StringIO()
    call_command("simulate_raters", "--campaign", str(campaign.pk), "--raters", "2", "--noise", "0.5", "--seed", "3",
                 stdout=out)
    text = out.getvalue()
    assert "2 simulated raters (shorter, strength 4, noise 0.5" in text
    assert "done in" in text and "nothing left to rate in round 0" in text and "rated 8," in text
    assert Rating.objects.count() == 8


def test_management_command_refuses_bad_settings_with_the_reason(db):
    campaign = CampaignFactory()
    with pytest.raises(CommandError, match="noise is a probability"):
        call_command("simulate_raters", "--campaign", str(campaign.pk), "--noise", "2")
    with pytest.raises(CommandError, match="No campaign 999999"):
        call_command("simulate_raters", "--campaign", "999999")
    assert not User.objects.filter(username__startswith="sim-").exists()


@pytest.mark.django_db
def test_the_celery_tasks_step_rates_in_process_and_says_when_it_is_done():
    campaign = campaign_with_round(prompts=4, overlap=2)
    config = {"raters": 2, "preference": "shorter", "rounds": 1}
    delay = simulation_step(campaign_id=campaign.pk, config=config, until_round=0, started_at=time.time() - 1,
                            deadline=time.time() + 60)
    assert delay is None and Rating.objects.count() == 8


@pytest.mark.django_db
def test_the_celery_step_hands_the_worker_back_while_the_next_round_is_not_open():
    campaign = campaign_with_round(prompts=3, overlap=1)
    config = {"raters": 1, "preference": "shorter", "rounds": 2}
    started = time.time() - 1
    first = simulation_step(campaign_id=campaign.pk, config=config, until_round=1, started_at=started,
                            deadline=time.time() + 60)
    assert first == 5.0 and Rating.objects.count() == 3  # round 0 rated; come back in 5 s
    open_next_round(campaign, 1)
    second = simulation_step(campaign_id=campaign.pk, config=config, until_round=1, started_at=started,
                             deadline=time.time() + 60, step=1)
    assert second is None and Rating.objects.count() == 6
    gave_up = simulation_step(campaign_id=campaign.pk, config={**config, "rounds": 3}, until_round=2,
                              started_at=started, deadline=time.time() - 1, step=2)
    assert gave_up is None


# --- the staff API ----------------------------------------------------------------------


@pytest.fixture
def staff_client(make_user, api_client_for):
    return api_client_for(make_user(username="root", is_staff=True))


@pytest.fixture
def sent(monkeypatch):
    """Tasks handed to the broker, as their kwargs (the broker itself is
    exercised by tests/e2e/test_simulated_campaign.py)."""
    calls = []
    monkeypatch.setattr(tasks.simulate_raters_task, "apply_async",
                        lambda kwargs, task_id: calls.append((kwargs, task_id)))
    return calls


def test_staff_start_simulated_raters_and_the_task_is_queued_after_commit(
    staff_client, sent, django_capture_on_commit_callbacks, db
):
    campaign = campaign_with_round(prompts=3, overlap=2)
    with django_capture_on_commit_callbacks(execute=True):
        answer = staff_client.post(f"/api/campaigns/{campaign.pk}/simulate/",
                                   {"raters": 2, "preference": "keyword:paris", "noise": 0.1, "rounds": 2}, format="json")
    assert answer.status_code == 202, answer.data
    body = answer.data
    assert body["usernames"] == [f"sim-c{campaign.pk}-r0", f"sim-c{campaign.pk}-r1"]
    assert body["until_round"] == 1 and body["config"]["preference"] == "keyword:paris"
    [(kwargs, task_id)] = sent
    assert task_id == body["task_id"]
    assert (kwargs["campaign_id"], kwargs["until_round"], kwargs["config"]["noise"]) == (campaign.pk, 1, 0.1)
    assert Membership.objects.filter(campaign=campaign, annotator__username__startswith="sim-").count() == 2


@pytest.mark.parametrize("body, field, message", [
    ({"noise": 1.5}, "noise", "is a probability"),
    ({"position_bias": -0.1}, "position_bias", "is a probability"),
    ({"noise": 0.6, "position_bias": 0.6}, "position_bias", "together they can be at most 1"),
    ({"strength": 0}, "strength", "above 0"),
    ({"preference": "louder"}, "preference", "unknown preference"),
    ({"preference": "keyword:"}, "preference", "needs one word"),
    ({"preference": "reward:999999"}, "preference", "no reward model version"),
    ({"preference": "reward:/nonexistent/rm"}, "preference", "not a reward model folder"),
    ({"raters": 0}, "raters", "between 1 and 200"),
    ({"rounds": 0}, "rounds", "between 1 and 1000"),
    ({"label": "Has Space"}, "label", "lowercase letters or digits"),
    ({"noize": 0.1}, "noize", "not a setting"),
    ({"seconds_per_rating": 4000}, "seconds_per_rating", "between 0 and 3600"),
    ({"references": "/nonexistent/references.jsonl"}, "references", "cannot be read"),
    ({"preference": "reference"}, "references", "needs the references file"),
    ({"review": True}, "review", "write nothing to review"),
    ({"both_bad_margin": -1}, "both_bad_margin", "between 0 and 100"),
    # the campaign takes no demonstrations (the default): raters could not write
    ({"references": str(DATA)}, "references", "takes no demonstrations"),
])
def test_bad_settings_are_a_400_naming_the_field_and_nothing_is_written(staff_client, sent, db, body, field, message):
    campaign = campaign_with_round(prompts=2)
    users, members = User.objects.count(), Membership.objects.count()
    answer = staff_client.post(f"/api/campaigns/{campaign.pk}/simulate/", body, format="json")
    assert answer.status_code == 400
    assert message in answer.data["errors"][field] and field in answer.data["detail"]
    assert (User.objects.count(), Membership.objects.count(), sent) == (users, members, [])


def test_staff_start_raters_who_write_and_review_on_a_campaign_that_asks_for_demonstrations(
    staff_client, sent, django_capture_on_commit_callbacks, db
):
    campaign = campaign_with_round(prompts=2, demonstrations=Campaign.Demonstrations.BOTH_BAD)
    with django_capture_on_commit_callbacks(execute=True):
        answer = staff_client.post(f"/api/campaigns/{campaign.pk}/simulate/", {
            "preference": "reference", "references": str(DATA), "both_bad_margin": 2.5, "review": True,
        }, format="json")
    assert answer.status_code == 202, answer.data
    [(kwargs, _)] = sent
    assert {k: kwargs["config"][k] for k in ("references", "both_bad_margin", "review", "write")} == {
        "references": str(DATA), "both_bad_margin": 2.5, "review": True, "write": True}


def test_a_wrong_type_is_a_400_from_the_serializer(staff_client, sent, db):
    campaign = CampaignFactory()
    answer = staff_client.post(f"/api/campaigns/{campaign.pk}/simulate/", {"strength": "very"}, format="json")
    assert answer.status_code == 400 and answer.data["error"] == "invalid" and "strength" in answer.data["errors"]
    assert not User.objects.filter(username__startswith="sim-").exists()


def test_an_archived_campaign_is_a_409_and_an_unknown_one_a_404(staff_client, sent, db):
    campaign = CampaignFactory(status=Campaign.Status.ARCHIVED)
    assert staff_client.post(f"/api/campaigns/{campaign.pk}/simulate/", {}, format="json").status_code == 409
    assert staff_client.post("/api/campaigns/999999/simulate/", {}, format="json").status_code == 404
    assert not User.objects.filter(username__startswith="sim-").exists() and sent == []


def test_only_staff_may_start_simulated_raters(
    annotator_client, campaign_admin_client, ml_engineer_client, anonymous_client, sent, db
):
    campaign = CampaignFactory(annotators=[annotator_client.user])
    url = f"/api/campaigns/{campaign.pk}/simulate/"
    for client in (annotator_client, campaign_admin_client, ml_engineer_client):
        answer = client.post(url, {}, format="json")
        assert answer.status_code == 403 and "Only staff" in answer.data["detail"]
    assert anonymous_client.post(url, {}, format="json").status_code == 401
    assert not User.objects.filter(username__startswith="sim-").exists() and sent == []


# --- a reward model as the preference -------------------------------------------------


@pytest.mark.django_db
def test_raters_with_a_reward_model_version_pick_what_it_scores_higher(tiny_reward_model):
    from rlhf.reward import score  # torch

    campaign = campaign_with_round(prompts=5, overlap=1)
    # The same question text whatever the factories' counters are, so the
    # (seeded) reward model's scores are the same in every run.
    campaign.prompts.update(text="What is the capital of France?")
    version = RewardModelVersion.objects.create(campaign=campaign, version=1, path=tiny_reward_model, sha256="0" * 64)
    config, path = simulation_config_build(campaign=campaign, values={"preference": f"reward:{version.pk}", "raters": 1,
                                                                      "strength": 100.0, "rounds": None})
    assert path == tiny_reward_model
    result = simulation_run(campaign=campaign, config=config, reward_path=path)
    assert result.ratings == 5
    for r in Rating.objects.select_related("comparison__prompt", "comparison__response_a", "comparison__response_b"):
        c = r.comparison
        a, b = score(tiny_reward_model, [c.prompt.text] * 2, [c.response_a.text, c.response_b.text])
        assert abs(a - b) * config.strength > 10, "a clear difference: P(the other pick) < 5e-5"
        assert r.choice == ("A" if a > b else "B"), (a, b, r.choice)


# --- the in-process client answers as the annotator API does ---------------------------


class RequestStack:
    """ApiClient.request through Django's whole request stack in this process
    (middleware, URLs, authentication, views): the annotator API itself."""

    def __init__(self, token: str):
        self.client, self.token = Client(), token

    def request(self, method: str, path: str, body=None) -> tuple[int, object]:
        kwargs = {"HTTP_AUTHORIZATION": f"Token {self.token}"}
        if body is not None:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        answer = getattr(self.client, method.lower())(path, **kwargs)
        return answer.status_code, json.loads(answer.content) if answer.content else None


def through_the_api(token: str) -> HttpRaterClient:
    client = HttpRaterClient("http://testserver", token)
    client.api = RequestStack(token)
    return client


@pytest.mark.django_db
def test_the_in_process_client_answers_every_call_as_the_annotator_api_does():
    # given: a round of two comparisons, k = 1, and two simulated raters
    campaign = campaign_with_round(prompts=2, overlap=1)
    [(name, token), _] = simulated_raters_ensure(campaign=campaign, config=SimulationConfig(raters=2))
    api, service = through_the_api(token), ServiceRaterClient(token)
    stranger = CampaignFactory()

    def same(call, *args, status: int):
        answers = call(api, *args), call(service, *args)
        assert answers[0] == answers[1] and answers[0][0] == status, answers
        return answers[0][1]

    same(lambda c: c.progress(campaign.pk), status=200)
    same(lambda c: c.progress(stranger.pk), status=404)
    same(lambda c: c.next(stranger.pk), status=404)
    # the lease: the live one comes back to either client
    leased = same(lambda c: c.next(campaign.pk), status=200)
    comparison = leased["comparison"]
    # a rating: 201, and the same idempotency key again 200 with the same rating
    rating = {"comparison": comparison, "choice": "A", "strength": 2, "reason": "", "time_on_task_ms": 1500,
              "idempotency_key": str(uuid.uuid4())}
    first, again = service.rate(rating), api.rate(rating)
    assert (first[0], again[0]) == (201, 200) and first[1] == again[1]
    same(lambda c: c.rate({**rating, "idempotency_key": str(uuid.uuid4())}), status=409)  # rated already
    same(lambda c: c.rate({**rating, "comparison": 999999, "idempotency_key": str(uuid.uuid4())}), status=404)
    same(lambda c: c.skip(comparison, "no longer"), status=409)
    same(lambda c: c.skip(999999, "no such"), status=404)
    # a skip, then nothing left for this rater
    other = same(lambda c: c.next(campaign.pk), status=200)["comparison"]
    assert service.skip(other, " too long to read ") == (
        200, {"comparison": other, "status": "released", "skip_reason": "too long to read"})
    same(lambda c: c.next(campaign.pk), status=204)
    # paused, at the daily limit, the campaign paused, not an annotator, deactivated
    member = Membership.objects.filter(campaign=campaign, annotator__username=name)
    member.update(status="paused", paused_reason="too fast")
    assert "too fast" in same(lambda c: c.next(campaign.pk), status=403)["detail"]
    member.update(status="active", daily_limit=1)
    same(lambda c: c.next(campaign.pk), status=429)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.PAUSED)
    same(lambda c: c.next(campaign.pk), status=409)
    user = User.objects.get(username=name)
    user.groups.remove(Group.objects.get(name=Role.ANNOTATOR))
    same(lambda c: c.next(campaign.pk), status=403)
    same(lambda c: c.progress(campaign.pk), status=200)
    User.objects.filter(pk=user.pk).update(is_active=False)
    same(lambda c: c.progress(campaign.pk), status=401)

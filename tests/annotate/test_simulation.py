"""Simulated raters: the preference and the rater's decision (pure
functions), the staff API's validation, raters rating through the real
request stack, and the quality pages catching a noisy simulated rater."""
import json
import math
import random
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from annotate.models import Lease, Campaign, Membership, Rating, Role
from annotate.selectors.quality import campaign_quality
from annotate.services.gold import gold_import
from annotate.services.rounds import round_open
from annotate.services.simulation import (
    Judge,
    Preference,
    Simulation,
    SimulationConfig,
    preference_margin,
    preference_outcome,
    preference_parse,
    preference_scores,
    simulated_choice,
    simulated_raters_ensure,
    simulation_run,
    simulation_step,
    wilson_interval,
)
from tests.factories import CampaignFactory, PolicyVersionFactory, PromptFactory, ResponseFactory

User = get_user_model()

SHORT = "Paris."
LONG = "The capital of France is Paris, a large city on the Seine with many museums and old bridges."


# --- the preference and the decision (no database) ------------------------------------


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
    # Wilson (1927); e.g. 8 of 10 gives [0.490, 0.943] (Newcombe 1998, table I method 3).
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and round(hi, 3) == 0.161
    assert wilson_interval(5, 0) == (0.0, 1.0)


# --- a campaign for the simulated raters to rate ---------------------------------------


def campaign_with_round(*, prompts: int, gold: int = 0, **fields) -> Campaign:
    """Round 0 open: each prompt answered twice by v0, one short answer and one
    long (on a random sample index), plus `gold` gold pairs whose chosen
    answer is the short one, mixed in at gold_frequency."""
    campaign = CampaignFactory(comparisons_per_round=prompts, **fields)
    v0 = PolicyVersionFactory(campaign=campaign, version=0)
    rng = random.Random(7)
    for i, prompt in enumerate(PromptFactory.create_batch(prompts, campaign=campaign)):
        texts = [f"Answer {i}.", f"Answer {i}: " + LONG]
        rng.shuffle(texts)
        ResponseFactory(prompt=prompt, policy_version=v0, sample_index=0, text=texts[0])
        ResponseFactory(prompt=prompt, policy_version=v0, sample_index=1, text=texts[1])
    if gold:
        lines = b"".join(
            json.dumps({"external_id": f"g{i}", "prompt": f"Gold question {i}?", "chosen": f"Right {i}.",
                        "rejected": f"Wrong {i}: " + LONG}).encode() + b"\n"
            for i in range(gold)
        )
        gold_import(campaign=campaign, data=lines)
    round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
    return campaign


def run(campaign, **config):
    config.setdefault("rounds", None)
    return simulation_run(campaign=campaign, config=SimulationConfig(**config), until_round=None)


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
    from annotate.errors import Conflict

    campaign = CampaignFactory()
    make_user(Role.ANNOTATOR, username=f"sim-c{campaign.pk}-r0")
    with pytest.raises(Conflict, match="belong to people"):
        simulated_raters_ensure(campaign=campaign, config=SimulationConfig(raters=1))


@pytest.mark.django_db
def test_raters_rate_every_comparison_through_the_api_as_the_preference_says():
    # given: 6 comparisons, overlap 3, one short and one long answer each
    campaign = campaign_with_round(prompts=6, overlap=3)
    # when
    result = run(campaign, raters=3, preference="shorter", noise=0.0)
    # then: 18 ratings, each through a lease (the API's path), all for the short answer
    assert (result.ratings, result.skips, result.lost, result.rounds) == (18, 0, 0, [0])
    assert result.ended == "nothing left to rate in the round open now"
    ratings = Rating.objects.select_related("comparison__response_a", "comparison__response_b")
    assert ratings.count() == 18
    for r in ratings:
        short_side = "A" if len(r.comparison.response_a.text) < len(r.comparison.response_b.text) else "B"
        assert (r.choice, r.strength) == (short_side, 3)
        assert r.annotator.username.startswith(f"sim-c{campaign.pk}-")
    assert Lease.objects.filter(status="done").count() == 18
    assert len(set(ratings.values_list("idempotency_key", flat=True))) == 18


@pytest.mark.django_db
def test_max_ratings_stops_the_pool_and_position_bias_shows_as_left_picks():
    campaign = campaign_with_round(prompts=10, overlap=2)
    result = run(campaign, raters=2, preference="longer", position_bias=1.0, max_ratings=7)
    assert result.ratings == 7 and result.ended == "max_ratings reached"
    assert set(Rating.objects.values_list("choice", flat=True)) == {"A"}


@pytest.mark.django_db
def test_a_comparison_the_judge_cannot_judge_is_skipped_with_the_reason():
    campaign = campaign_with_round(prompts=3, overlap=1)
    config = SimulationConfig(raters=1, preference="reward:/x", rounds=None)
    accounts = simulated_raters_ensure(campaign=campaign, config=config)

    class BrokenJudge(Judge):
        def scorer(self):
            raise RuntimeError("reward model out of memory")

    from annotate.services.simulation import InProcessClient

    result = Simulation(campaign_id=campaign.pk, config=config, accounts=accounts, make_client=InProcessClient,
                        judge=BrokenJudge(preference_parse("reward:/x"))).run(until_round=None)
    assert (result.ratings, result.skips) == (0, 3)
    reasons = set(Lease.objects.values_list("skip_reason", flat=True))
    assert reasons == {"simulated rater could not judge it: reward model out of memory"}


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
    from django.core.management.base import CommandError

    campaign = CampaignFactory()
    with pytest.raises(CommandError, match="noise is a probability"):
        call_command("simulate_raters", "--campaign", str(campaign.pk), "--noise", "2")
    with pytest.raises(CommandError, match="No campaign 999999"):
        call_command("simulate_raters", "--campaign", "999999")
    assert not User.objects.filter(username__startswith="sim-").exists()


@pytest.mark.django_db
def test_the_celery_tasks_step_rates_in_process_and_says_when_it_is_done():
    import time

    campaign = campaign_with_round(prompts=4, overlap=2)
    config = {"raters": 2, "preference": "shorter", "rounds": 1}
    delay = simulation_step(campaign_id=campaign.pk, config=config, until_round=0, started_at=time.time() - 1,
                            deadline=time.time() + 60)
    assert delay is None and Rating.objects.count() == 8


# --- the staff API ----------------------------------------------------------------------


@pytest.fixture
def staff_client(make_user, api_client_for):
    return api_client_for(make_user(username="root", is_staff=True))


@pytest.fixture
def sent(monkeypatch):
    """Tasks handed to the broker, as their kwargs (the broker itself is
    exercised by tests/e2e/test_simulated_campaign.py)."""
    from annotate import tasks

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
])
def test_bad_settings_are_a_400_naming_the_field_and_nothing_is_written(staff_client, sent, db, body, field, message):
    campaign = campaign_with_round(prompts=2)
    users, members = User.objects.count(), Membership.objects.count()
    answer = staff_client.post(f"/api/campaigns/{campaign.pk}/simulate/", body, format="json")
    assert answer.status_code == 400
    assert message in answer.data["errors"][field] and field in answer.data["detail"]
    assert (User.objects.count(), Membership.objects.count(), sent) == (users, members, [])


def test_a_wrong_type_is_a_400_from_the_serializer(staff_client, sent, db):
    campaign = CampaignFactory()
    answer = staff_client.post(f"/api/campaigns/{campaign.pk}/simulate/", {"strength": "very"}, format="json")
    assert answer.status_code == 400 and "strength" in answer.data
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


# --- simulated raters in the quality pages --------------------------------------------


@pytest.mark.django_db
def test_a_noisy_simulated_rater_gets_low_gold_accuracy_and_weight_careful_ones_do_not():
    # given: 40 regular comparisons and 40 gold pairs (chosen = the short
    # answer), every rater sees all 80; no auto-pause, to see the weights
    campaign = campaign_with_round(prompts=40, gold=40, overlap=4, gold_frequency=1.0, gold_min_accuracy=0.0)
    # when: three careful raters and one that clicks at random 90% of the time
    careful = run(campaign, raters=3, label="careful", noise=0.0, seed=1)
    noisy = run(campaign, raters=1, label="noisy", noise=0.9, seed=1)
    assert (careful.ratings, noisy.ratings) == (240, 80)
    # then: the quality page tells them apart like any annotator
    table = {row["username"]: row for row in campaign_quality(campaign=campaign)["annotators"]}
    noisy_row = table[f"sim-c{campaign.pk}-noisy0"]
    careful_rows = [table[f"sim-c{campaign.pk}-careful{i}"] for i in range(3)]
    assert noisy_row["gold_n"] == 40 and all(r["gold_n"] == 40 for r in careful_rows)
    assert all(r["gold_accuracy"] == 1.0 for r in careful_rows)
    assert noisy_row["gold_accuracy"] < 0.8  # expected 0.1 + 0.9 x 0.5 = 0.55
    assert noisy_row["weight"] < 0.5 * min(r["weight"] for r in careful_rows)
    assert noisy_row["reliability"] < 0.5 < min(r["reliability"] for r in careful_rows)


@pytest.mark.django_db
def test_a_noisy_simulated_rater_is_paused_by_the_gold_check_and_stops():
    campaign = campaign_with_round(prompts=30, gold=30, overlap=2, gold_frequency=1.0, gold_min_accuracy=0.8,
                                   gold_min_count=5)
    careful = run(campaign, raters=1, label="careful", noise=0.0)
    noisy = run(campaign, raters=1, label="noisy", noise=0.9)
    assert careful.ratings == 60 and not careful.raters[f"sim-c{campaign.pk}-careful0"]["stopped"]
    stopped = noisy.raters[f"sim-c{campaign.pk}-noisy0"]["stopped"]
    assert noisy.ratings < 60 and "next answered 403" in stopped and "gold-pair accuracy check" in stopped
    membership = Membership.objects.get(campaign=campaign, annotator__username=f"sim-c{campaign.pk}-noisy0")
    assert membership.status == "paused" and membership.paused_automatically


class FakeClock:
    """Time that moves only when the simulation sleeps."""

    def __init__(self, on_sleep=None):
        self.now, self.slept, self.on_sleep = 1000.0, [], on_sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep()


def simulation(campaign, clock: FakeClock, **config) -> Simulation:
    from annotate.services.simulation import InProcessClient

    config = SimulationConfig(**config)
    accounts = simulated_raters_ensure(campaign=campaign, config=config)
    return Simulation(campaign_id=campaign.pk, config=config, accounts=accounts, make_client=InProcessClient,
                      judge=Judge(preference_parse(config.preference)), clock=clock, sleep=clock.sleep)


@pytest.mark.django_db
def test_each_rater_takes_about_their_seconds_per_rating_and_holds_the_lease_meanwhile():
    campaign = campaign_with_round(prompts=4, overlap=2)
    clock = FakeClock()
    result = simulation(campaign, clock, raters=2, seconds_per_rating=10.0).run(until_round=None)
    assert result.ratings == 8
    times = sorted(Rating.objects.values_list("time_on_task_ms", flat=True))
    assert 10_000 * 0.75 * 0.8 <= times[0] and times[-1] <= 10_000 * 1.25 * 1.2
    speeds = [r["seconds_per_rating"] for r in result.raters.values()]
    assert len(set(speeds)) == 2 and all(7.5 <= s <= 12.5 for s in speeds)
    # Both raters read at once (their leases overlap): the run takes about
    # four ratings' time, not eight.
    assert sum(clock.slept) < 4 * 12.5 * 1.2


def open_next_round(campaign, index: int):
    """What the training run's generate and open stages leave: v<index> answered the round's prompts."""
    from annotate.models import PolicyVersion
    from annotate.services.rounds import round_prompts

    previous = PolicyVersion.objects.get(campaign=campaign, version=index - 1)
    new = PolicyVersionFactory(campaign=campaign, version=index, parent=previous)
    for prompt in round_prompts(campaign=campaign, index=index):
        ResponseFactory(prompt=prompt, policy_version=new, sample_index=0, text="Short.")
        if not previous.answers.filter(prompt=prompt, sample_index=0).exists():
            ResponseFactory(prompt=prompt, policy_version=previous, sample_index=0, text=LONG)
    return round_open(campaign=campaign, index=index, candidate=new, baseline=previous)


@pytest.mark.django_db
def test_rounds_mode_waits_for_training_to_open_the_next_round_then_rates_it():
    # given: round 0 open; "training" opens round 1 while the raters wait
    campaign = campaign_with_round(prompts=3, overlap=1)
    clock = FakeClock(on_sleep=lambda: None)
    sim = simulation(campaign, clock, raters=1, rounds=2)
    clock.on_sleep = lambda: campaign.rounds.filter(index=1).exists() or open_next_round(campaign, 1)
    # when
    result = sim.run(until_round=1, poll_s=2.0)
    # then
    assert result.rounds == [0, 1] and result.ratings == 6
    assert result.ended == "nothing left to rate in round 1"
    assert 2.0 in clock.slept  # it polled progress while round 1 was not open


@pytest.mark.django_db
def test_the_celery_step_hands_the_worker_back_while_the_next_round_is_not_open():
    import time

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


# --- a reward model as the preference -------------------------------------------------


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory) -> str:
    """A tiny scalar-head model saved as a reward model folder (random weights, seeded)."""
    import torch
    from transformers import AutoConfig, LlamaForSequenceClassification

    from rlhf.tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("rm") / "rm", [SHORT, LONG, "Question?"] * 30, seed=0)
    config = AutoConfig.from_pretrained(path)
    config.num_labels = 1
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight *= 1000  # scores apart by whole units, so the raters' picks are not coin flips
    model.save_pretrained(path)
    return path


def test_reward_preference_scores_as_rlhf_reward_does(tiny_reward_model):
    from rlhf.reward import score

    answers = [SHORT, LONG, "Lyon."]
    judged = Judge(preference_parse(f"reward:{tiny_reward_model}"), tiny_reward_model).scores(["q"] * 3, answers)
    assert judged == pytest.approx(score(tiny_reward_model, ["q"] * 3, answers), abs=1e-5)
    assert len(set(judged)) == 3


@pytest.mark.django_db
def test_raters_with_a_reward_model_version_pick_what_it_scores_higher(tiny_reward_model):
    from annotate.models import RewardModelVersion
    from rlhf.reward import score

    campaign = campaign_with_round(prompts=5, overlap=1)
    # The same question text whatever the factories' counters are, so the
    # (seeded) reward model's scores are the same in every run.
    campaign.prompts.update(text="What is the capital of France?")
    version = RewardModelVersion.objects.create(campaign=campaign, version=1, path=tiny_reward_model, sha256="0" * 64)
    from annotate.services.simulation import simulation_config_build

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

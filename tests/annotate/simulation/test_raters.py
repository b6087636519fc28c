"""The raters' loop (annotate/simulation/raters.py) against a real campaign,
rating in this process through the services the annotator API calls: every
comparison rated as the preference says, the caps, speeds and rounds, and the
quality pages catching a noisy simulated rater like any annotator."""
import pytest

from annotate.models import Lease, Membership, Rating
from annotate.selectors.quality import campaign_quality
from annotate.services.simulation import ServiceRaterClient, simulated_raters_ensure
from annotate.simulation.preference import Judge, preference_parse
from annotate.simulation.raters import Simulation, SimulationConfig
from tests.annotate.simulation.campaigns import campaign_with_round, open_next_round, run


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

    result = Simulation(campaign_id=campaign.pk, config=config, accounts=accounts, make_client=ServiceRaterClient,
                        judge=BrokenJudge(preference_parse("reward:/x"))).run(until_round=None)
    assert (result.ratings, result.skips) == (0, 3)
    reasons = set(Lease.objects.values_list("skip_reason", flat=True))
    assert reasons == {"simulated rater could not judge it: reward model out of memory"}


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


# --- speed and rounds -----------------------------------------------------------------


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
    config = SimulationConfig(**config)
    accounts = simulated_raters_ensure(campaign=campaign, config=config)
    return Simulation(campaign_id=campaign.pk, config=config, accounts=accounts, make_client=ServiceRaterClient,
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
def test_raters_rank_a_k_set_campaign_as_the_preference_says(make_open_round):
    from annotate.models import Answer

    # given: 4 k-sets of 3 answers of growing length, overlap 2
    round_ = make_open_round(prompts=4, overlap=2, rank_k=3)
    for answer in Answer.objects.filter(prompt__campaign=round_.campaign):
        answer.text = "Paris" + " is in France" * 27 ** answer.sample_index  # 4, 82 and 2,188 words
        answer.save(update_fields=["text"])
    # when
    result = run(round_.campaign, raters=2, preference="shorter", noise=0.0)
    # then: every k-set ranked twice, shortest first, through leases
    assert (result.ratings, result.skips, result.lost) == (8, 0, 0)
    for rating in Rating.objects.select_related("comparison"):
        sample = dict(Answer.objects.filter(pk__in=rating.comparison.answers).values_list("pk", "sample_index"))
        ranked = [sample[rating.comparison.answers[group[0] - 1]] for group in rating.ranking]
        assert rating.choice == "ranking" and ranked == [0, 1, 2], rating.ranking
    assert Lease.objects.filter(status="done").count() == 8

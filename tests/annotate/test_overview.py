"""A campaign's overview page (annotate/selectors/overview.py,
overview_now.py, frontend/console/campaigns.py): the figures it embeds for
its charts against what the database holds, computed here independently
from the ORM; what it says is stuck; who sees which button and that a POST
by someone not allowed writes nothing; its query count against the number
of rounds."""
import json
import random
import re
from datetime import datetime, timedelta
from math import sqrt

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotate.models import Answer, Campaign, Comparison, PolicyVersion, Rating, RewardModelVersion, Role, TrainingRun
from annotate.selectors.overview import campaign_overview, campaign_overview_now
from annotate.selectors.overview_now import MISSED_BEATS, QUEUED_UNTAKEN_S
from annotate.services.evaluation import evaluation_start
from tests.factories import (
    CampaignFactory,
    ExternalModelFactory,
    PromptFactory,
    evaluation_campaign,
    iso,
    loop_campaign_with_history,
    open_round,
    ratings_bulk_create,
)

pytestmark = pytest.mark.django_db

# The page, whatever the number of rounds and runs (see test_campaign_admin.py's CONSOLE_OVERVIEW_QUERIES).
OVERVIEW_PAGE_QUERIES = 14


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def embedded(html: str, element_id: str):
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S)
    assert match, f"no #{element_id} on the page"
    return json.loads(match.group(1))


def wilson(wins: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The textbook Wilson score interval, written out here."""
    p = wins / n
    denominator = 1 + z * z / n
    centre = p + z * z / (2 * n)
    spread = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


def _expected_win(round_, one, other, external=False):
    """One's win rate (ties half, both-bad out) against other (a policy
    version, or an external model) in the round's regular comparisons, from
    the rating rows one by one, with its Wilson interval and count."""
    score = n = 0
    for rating in Rating.objects.filter(comparison__round=round_, comparison__gold_choice="").select_related(
        "comparison__response_a", "comparison__response_b"
    ):
        ra, rb = rating.comparison.response_a, rating.comparison.response_b
        a = ra.policy_version_id if not (external and ra.external_model_id) else ("x", ra.external_model_id)
        b = rb.policy_version_id if not (external and rb.external_model_id) else ("x", rb.external_model_id)
        if external:
            other_key = ("x", other.pk)
            if {a, b} != {one.pk, other_key} or rating.choice == "both_bad":
                continue
            n += 1
            score += 0.5 if rating.choice == "tie" else float((rating.choice == "A") == (a == one.pk))
            continue
        if {a, b} != {one.pk, other.pk} or rating.choice == "both_bad":
            continue
        n += 1
        if rating.choice == "tie":
            score += 0.5
        elif (rating.choice == "A") == (a == one.pk):
            score += 1
    return (score / n, *wilson(score, n), n) if n else (None, None, None, 0)


def _reference_pairs(campaign, round_, annotators, seed=1):
    """The round's candidate against an external model's answers too, as
    round_open pairs them when a reference model is set, rated at random."""
    reference = ExternalModelFactory(campaign=campaign, name="frontier")
    rng = random.Random(seed)
    pairs = []
    for prompt in campaign.prompts.all():
        theirs = Answer.objects.create(prompt=prompt, external_model=reference, text=f"frontier on {prompt.pk}")
        ours = Answer.objects.get(prompt=prompt, policy_version=round_.candidate, sample_index=0)
        candidate_is_a = rng.random() < 0.5
        a, b = (ours, theirs) if candidate_is_a else (theirs, ours)
        pairs.append(Comparison.objects.create(round=round_, prompt=prompt, response_a=a, response_b=b,
                                               candidate_is_a=candidate_is_a))
    ratings_bulk_create({"comparison_id": c.pk, "annotator": a, "choice": rng.choice(["A", "B", "B", "tie"])}
                        for c in pairs for a in annotators)
    return reference


def test_the_overview_charts_carry_the_figures_the_database_holds(client, campaign_admin, make_user):
    annotators = [make_user(Role.ANNOTATOR) for _ in range(3)]
    campaign = loop_campaign_with_history(annotators)
    reference = _reference_pairs(campaign, campaign.rounds.get(index=2), annotators)
    html = login(campaign_admin).get(f"/console/campaigns/{campaign.pk}/").content.decode()
    charts = embedded(html, "overview-charts")
    rounds = list(campaign.rounds.select_related("candidate", "baseline").order_by("index"))
    assert charts["x"] == [r.index for r in rounds]
    v0 = PolicyVersion.objects.get(campaign=campaign, version=0)
    for i, r in enumerate(rounds):
        # against the previous version: the round's own pairs; round 0 pairs v0 with itself
        rate, lo, hi, n = _expected_win(r, r.candidate, r.baseline) if i else (None, None, None, 0)
        assert charts["win"]["previous"]["values"][i] == pytest.approx(rate)
        assert charts["win"]["previous"]["lo"][i] == pytest.approx(lo)
        assert charts["win"]["previous"]["hi"][i] == pytest.approx(hi)
        assert charts["win"]["previous"]["n"][i] == n
        # against the base: measured only where the two met (round 1)
        base_rate = _expected_win(r, r.candidate, v0)[0] if r.candidate.pk != v0.pk else None
        assert charts["win"]["base"]["values"][i] == pytest.approx(base_rate)
        # against the reference model: its pairs alone (and they are not in "previous")
        ref = _expected_win(r, r.candidate, reference, external=True)
        assert (charts["win"]["reference"]["values"][i], charts["win"]["reference"]["n"][i]) == (
            pytest.approx(ref[0]), ref[3])
        # KL of the round's candidate: kl_to_base where recorded, else its last policy/kl; v0 is the base
        metrics = r.candidate.metrics
        kl = 0.0 if r.candidate.version == 0 else metrics.get("policy/kl_to_base", metrics.get("policy/kl"))
        assert charts["kl"]["values"][i] == pytest.approx(kl)
        # the reward model trained on the round's run, on its held-out pairs
        reward = RewardModelVersion.objects.filter(training_run__round=r).first()
        if reward is None:
            assert charts["heldout"]["values"][i] is None
        else:
            pairs = sum(v for k, v in reward.metrics.items() if k.startswith("eval/reward/pairs_margin_"))
            accuracy = reward.metrics["eval/reward/accuracy"]
            assert charts["heldout"]["values"][i] == pytest.approx(accuracy)
            assert (charts["heldout"]["lo"][i], charts["heldout"]["hi"][i]) == pytest.approx(wilson(accuracy * pairs, pairs))
        # pace: the round's regular ratings over the hours it collected
        r.refresh_from_db()
        ratings = Rating.objects.filter(comparison__round=r, comparison__gold_choice="").count()
        end = r.closed_at or timezone.now()
        hours = (end - r.opened_at).total_seconds() / 3600
        assert charts["rate"]["values"][i] == pytest.approx(ratings / hours, rel=1e-3)
        # time: rating, the gpu queue (each stage's wait), the stages' own seconds
        assert charts["minutes"]["rating"][i] == pytest.approx(hours * 60, rel=1e-3)
        run = TrainingRun.objects.filter(round=r).first()
        if run is None:
            assert charts["minutes"]["reward"][i] is None and charts["minutes"]["queue"][i] is None
            continue
        waited = sum(
            (datetime.fromisoformat(s["started_at"]) - datetime.fromisoformat(s["queued_at"])).total_seconds()
            for s in run.stages.values()
        )
        assert charts["minutes"]["queue"][i] == pytest.approx(waited / 60)
        for stage in ("reward", "policy", "generate"):
            assert charts["minutes"][stage][i] == pytest.approx(run.stages[stage]["seconds"] / 60)
        assert charts["minutes"]["snapshot_open"][i] == pytest.approx(
            (run.stages["snapshot"]["seconds"] + run.stages["open"]["seconds"]) / 60
        )
    assert charts["kl"]["budget"] == campaign.kl_budget == 1.0
    # the round that never met v0 says so instead of a number
    assert charts["win"]["base"]["values"][2] is None and "not measured" in html


def test_the_kl_chart_and_column_name_the_sft_model_when_the_campaign_anchors_there(campaign_admin, make_user):
    # given: a campaign whose policy steps are held to the base
    campaign = loop_campaign_with_history([make_user(Role.ANNOTATOR) for _ in range(2)])
    url = f"/console/campaigns/{campaign.pk}/"
    html = login(campaign_admin).get(url).content.decode()
    assert embedded(html, "overview-charts")["kl"]["reference"] == "base"
    assert '<th scope="col">KL to base</th>' in html and "KL to the SFT model" not in html
    # when: the campaign makes the SFT model the anchor
    Campaign.objects.filter(pk=campaign.pk).update(sft_anchor=Campaign.SFTAnchor.SFT)
    html = login(campaign_admin).get(url).content.decode()
    # then: the chart's data, its caption and the table's column say so (console_overview.js titles it from the data)
    charts = embedded(html, "overview-charts")
    assert charts["kl"]["reference"] == "sft"
    assert '<th scope="col">KL to the SFT model</th>' in html and "the SFT model its policy step was held to" in html
    assert charts["kl"]["values"] == campaign_overview(campaign=campaign)["charts"]["kl"]["values"]


def test_the_overview_reads_a_fixed_number_of_queries_whatever_the_number_of_rounds(
    campaign_admin, make_user, django_assert_max_num_queries
):
    annotators = [make_user(Role.ANNOTATOR) for _ in range(2)]
    few, many = loop_campaign_with_history(annotators, versions=2, prompts=3), loop_campaign_with_history(annotators, versions=9, prompts=3)
    counts = []
    for campaign in (few, many):
        with CaptureQueriesContext(connection) as queries:
            overview = campaign_overview(campaign=campaign)
        counts.append(len(queries))
        assert len(overview["rounds"]) == campaign.rounds.count()
    assert counts[0] == counts[1], counts
    client = login(campaign_admin)
    for campaign in (few, many):
        with django_assert_max_num_queries(OVERVIEW_PAGE_QUERIES):
            assert client.get(f"/console/campaigns/{campaign.pk}/").status_code == 200
        with django_assert_max_num_queries(OVERVIEW_PAGE_QUERIES):
            assert client.get(f"/console/campaigns/{campaign.pk}/now/").status_code == 200


def _fresh_overview(campaign, now) -> dict:
    """The overview computed with nothing cached: what the database holds."""
    cache.clear()
    return campaign_overview(campaign=campaign, now=now)


def _figures(overview: dict) -> list:
    keys = ("ratings", "first_rating_at", "last_rating_at", "ratings_per_hour", "vs_previous", "vs_base",
            "vs_reference", "reference_model")
    return [{k: row[k] for k in keys} for row in overview["rounds"]]


def test_a_closed_rounds_cached_tally_is_read_from_the_cache_and_never_stale(make_user):
    annotators = [make_user(Role.ANNOTATOR) for _ in range(3)]
    campaign = loop_campaign_with_history(annotators[:2], versions=3, prompts=4)
    closed = campaign.rounds.get(index=1)
    assert closed.status == "done"
    _reference_pairs(campaign, closed, annotators[:2])  # its tally against the reference is cached too
    now = timezone.now() + timedelta(minutes=1)
    cold = _fresh_overview(campaign, now)
    # Filled: the next read of the closed rounds comes from the cache, the
    # same figures, and its tally reads only the collecting round's ratings.
    with CaptureQueriesContext(connection) as queries:
        warm = campaign_overview(campaign=campaign, now=now)
    assert _figures(warm) == _figures(cold) and warm["rounds"][1]["vs_reference"]["n"] > 0
    tallies = [q["sql"] for q in queries.captured_queries if 'MIN("annotate_rating"."created_at")' in q["sql"]]
    current = campaign.rounds.get(status="collecting")
    assert len(tallies) == 1
    assert {int(pk) for pk in re.findall(r"\d+", tallies[0].split("IN (")[1].split(")")[0])} == {current.pk}
    # A rating reaching the closed round anyway (a retry, a fix by hand):
    # the page shows it at once, as computed with nothing cached.
    later = now - timedelta(seconds=1)
    ours = closed.comparisons.filter(gold_choice="", response_a__external_model=None, response_b__external_model=None)
    ratings_bulk_create([{"comparison_id": ours.first().pk, "annotator": annotators[2], "choice": "A"}])
    Rating.objects.filter(annotator=annotators[2]).update(created_at=later)
    after = campaign_overview(campaign=campaign, now=now)
    row = after["rounds"][1]
    assert row["ratings"] == cold["rounds"][1]["ratings"] + 1
    assert row["vs_previous"]["n"] == cold["rounds"][1]["vs_previous"]["n"] + 1
    assert row["last_rating_at"] == later.isoformat()
    assert _figures(after) == _figures(_fresh_overview(campaign, now))
    # And a rating leaving it (its comparison deleted) likewise.
    campaign_overview(campaign=campaign, now=now)
    closed.comparisons.filter(ratings__annotator=annotators[2]).delete()
    gone = campaign_overview(campaign=campaign, now=now)
    assert gone["rounds"][1]["vs_previous"]["n"] < row["vs_previous"]["n"]
    assert _figures(gone) == _figures(_fresh_overview(campaign, now))


# --- what is happening now, and what is stuck --------------------------------------


def _problems(campaign, **kwargs) -> dict:
    return {p["kind"]: p["text"] for p in campaign_overview_now(campaign=campaign, **kwargs)["problems"]}


def test_a_running_stage_without_a_heartbeat_is_said_to_be_stuck(settings, annotator):
    round_ = open_round(prompts=2, annotators=[annotator])
    now = timezone.now()
    run = TrainingRun.objects.create(
        campaign=round_.campaign, round=round_, kind="train", status="running", stage="reward", attempts=1,
        heartbeat_at=now - timedelta(seconds=MISSED_BEATS * settings.TRAINING_HEARTBEAT_S + 30),
        stages={"reward": {"status": "running", "started_at": iso(now - timedelta(minutes=5))}},
    )
    problems = _problems(round_.campaign, now=now)
    assert "heartbeat" in problems and f"Run {run.pk}'s reward stage has had no heartbeat" in problems["heartbeat"]
    # a beat a moment ago: nothing stuck about the run
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=now - timedelta(seconds=2))
    assert "heartbeat" not in _problems(round_.campaign, now=now)


def test_a_run_queued_behind_another_campaigns_run_says_so_without_naming_it(annotator):
    other = open_round(prompts=2, annotators=[annotator], name="secret other campaign")
    TrainingRun.objects.create(campaign=other.campaign, round=other, kind="train", status="running", stage="policy",
                               heartbeat_at=timezone.now())
    round_ = open_round(prompts=2, annotators=[annotator])
    now = timezone.now()
    run = TrainingRun.objects.create(campaign=round_.campaign, round=round_, kind="train", status="queued",
                                     stage="snapshot", stages={"snapshot": {"queued_at": iso(now)}})
    problems = _problems(round_.campaign, now=now)
    assert f"Run {run.pk} (snapshot) waits behind 1 run on the gpu queue" in problems["queue"]
    assert "another campaign's run (running)" in problems["queue"] and "secret" not in problems["queue"]
    # nothing ahead, and no worker took it for a while: that is said instead
    TrainingRun.objects.filter(campaign=other.campaign).update(status="succeeded")
    later = now + timedelta(seconds=QUEUED_UNTAKEN_S + 5)
    problems = _problems(round_.campaign, now=later)
    assert "queue" not in problems and "no gpu worker has taken it" in problems["no_worker"]


def test_a_queued_start_says_what_is_happening_instead_of_no_round_yet(campaign_admin, enqueued,
                                                                       django_capture_on_commit_callbacks):
    campaign = CampaignFactory(status=Campaign.Status.DRAFT)
    PromptFactory.create_batch(3, campaign=campaign)
    client = login(campaign_admin)
    page = client.get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert 'id="start-button"' in page and "Not started" in page
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"/console/campaigns/{campaign.pk}/start/").status_code == 302
    run = TrainingRun.objects.get(campaign=campaign)
    assert (run.kind, run.status, enqueued) == ("bootstrap", "queued", [(run.pk, "import")])
    page = client.get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert "Starting: the base model is imported and answers round 0" in page and "queued for a gpu worker" in page
    assert "No round yet" not in page.split('id="now"')[1].split("</section>")[0]
    assert 'id="start-button"' not in page
    # the polled panel says the same
    assert "Starting:" in client.get(f"/console/campaigns/{campaign.pk}/now/").content.decode()


def test_a_complete_round_with_auto_train_off_asks_for_train_now(annotator, other_annotator):
    round_ = open_round(prompts=2, overlap=1, annotators=[annotator])
    ratings_bulk_create({"comparison_id": c.pk, "annotator": annotator, "choice": "A"} for c in round_.comparisons.all())
    problems = _problems(round_.campaign)
    assert "auto-train is off" in problems["complete"] and "Train now" in problems["complete"]


def test_who_is_rating_and_a_round_nobody_rates(annotator, other_annotator, campaign_admin):
    from annotate.models import Lease

    round_ = open_round(prompts=3, overlap=2, annotators=[annotator, other_annotator])
    assert "No one is rating" in _problems(round_.campaign)["idle"]
    now = timezone.now()
    first, second = round_.comparisons.all()[:2]
    Lease.objects.create(comparison=first, annotator=annotator, leased_at=now, leased_until=now + timedelta(minutes=5))
    Lease.objects.create(comparison=second, annotator=other_annotator, leased_at=now - timedelta(hours=1),
                         leased_until=now - timedelta(minutes=50))  # expired: not on screen
    ratings_bulk_create([{"comparison_id": second.pk, "annotator": other_annotator, "choice": "B"}])
    now_panel = campaign_overview_now(campaign=round_.campaign)
    assert [(r["username"], r["on_screen"], r["recent_ratings"]) for r in now_panel["raters"]] == [
        (annotator.username, 1, 0), (other_annotator.username, 0, 1)]
    assert "idle" not in {p["kind"] for p in now_panel["problems"]}
    html = login(campaign_admin).get(f"/console/campaigns/{round_.campaign_id}/now/").content.decode()
    assert f'data-username="{annotator.username}"' in html and "1 of 6 ratings" in html
    # the panel is the console's: an annotator gets none of it
    assert login(annotator).get(f"/console/campaigns/{round_.campaign_id}/now/").status_code == 403


def test_the_eta_comes_from_the_stage_progress_and_earlier_runs(make_user):
    campaign = loop_campaign_with_history([make_user(Role.ANNOTATOR)], versions=3, prompts=2)
    current = campaign.rounds.order_by("-index").first()
    now = timezone.now()
    TrainingRun.objects.create(
        campaign=campaign, round=current, kind="train", status="running", stage="policy", progress=0.25,
        heartbeat_at=now, stages={"policy": {"status": "running", "started_at": iso(now - timedelta(seconds=60))}},
    )
    run = campaign_overview_now(campaign=campaign, now=now)["run"]
    earlier = TrainingRun.objects.filter(campaign=campaign, status="succeeded")
    generate = sorted(r.stages["generate"]["seconds"] for r in earlier)
    opened = sorted(r.stages["open"]["seconds"] for r in earlier)
    median = lambda xs: (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2  # noqa: E731
    assert run["eta"]["seconds"] == pytest.approx(60 * 0.75 / 0.25 + median(generate) + median(opened))
    assert "from its progress" in run["eta"]["text"]
    # a first run of a stage the campaign never finished gets no ETA, and says why
    TrainingRun.objects.filter(campaign=campaign, status="succeeded").delete()
    assert campaign_overview_now(campaign=campaign, now=now)["run"]["eta"]["seconds"] is None


# --- buttons: who sees them, who may press them ------------------------------------


def _collecting_rated_round(annotator):
    round_ = open_round(prompts=2, overlap=2, annotators=[annotator])
    ratings_bulk_create({"comparison_id": c.pk, "annotator": annotator, "choice": "A"} for c in round_.comparisons.all())
    return round_


def test_buttons_follow_the_role(annotator, campaign_admin, ml_engineer):
    round_ = _collecting_rated_round(annotator)
    url = f"/console/campaigns/{round_.campaign_id}/"
    admin_page = login(campaign_admin).get(url).content.decode()
    assert 'id="pause-button"' in admin_page and 'id="train-button"' not in admin_page
    engineer_page = login(ml_engineer).get(url).content.decode()
    assert 'id="train-button"' in engineer_page and 'id="pause-button"' not in engineer_page
    assert login(annotator).get(url).status_code == 403


def test_a_post_by_someone_not_allowed_is_refused_and_writes_nothing(annotator, campaign_admin, ml_engineer,
                                                                      other_campaign_admin, enqueued,
                                                                      django_capture_on_commit_callbacks):
    round_ = _collecting_rated_round(annotator)
    campaign = round_.campaign
    base = f"/console/campaigns/{campaign.pk}"
    # an admin may not train; an engineer may not pause; an annotator nothing; another campaign's admin sees no campaign
    assert login(campaign_admin).post(f"{base}/train/").status_code == 403
    assert login(ml_engineer).post(f"{base}/pause/").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        for action in ("train", "start", "pause"):
            assert login(annotator).post(f"{base}/{action}/").status_code == 403
            assert login(other_campaign_admin).post(f"{base}/{action}/").status_code == 404
    campaign.refresh_from_db()
    round_.refresh_from_db()
    assert campaign.status == "active" and round_.status == "collecting"
    assert not TrainingRun.objects.exists() and enqueued == []
    # those allowed: the engineer trains, the admin pauses
    with django_capture_on_commit_callbacks(execute=True):
        assert login(ml_engineer).post(f"{base}/train/").status_code == 302
    run = TrainingRun.objects.get()
    assert (run.kind, run.round_id, enqueued) == ("train", round_.pk, [(run.pk, "snapshot")])
    assert login(campaign_admin).post(f"{base}/pause/").status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == "paused"
    page = login(campaign_admin).get(f"{base}/").content.decode()
    assert 'id="resume-button"' in page and "The campaign is paused" in page


# --- evaluation campaigns, and the new-campaign form ----------------------------------


def test_an_evaluation_campaign_shows_progress_and_the_leaderboard_link_but_no_loop_charts(campaign_admin, annotator):
    campaign, models = evaluation_campaign(models=3, prompts=4, annotators=[annotator], comparisons_per_round=6)
    round_, added = evaluation_start(campaign=campaign)
    ratings_bulk_create({"comparison_id": c.pk, "annotator": annotator, "choice": "tie"}
                        for c in round_.comparisons.all()[:4])
    html = login(campaign_admin).get(f"/console/campaigns/{campaign.pk}/").content.decode()
    assert 'id="overview-charts"' not in html and "Is the loop working" not in html and "train-button" not in html
    assert f'href="/console/campaigns/{campaign.pk}/models/" id="leaderboard-link"' in html
    regular = round_.comparisons.filter(gold_choice="")
    complete = sum(1 for c in regular if c.rating_count >= campaign.overlap)
    assert f"<td>{complete} of {regular.count()}</td>" in html
    assert f"{Rating.objects.filter(comparison__round=round_).count()} of {regular.count() * campaign.overlap} ratings" in html


def test_the_new_campaign_form_offers_the_models_in_the_store_and_cpu_settings(settings, tmp_path, campaign_admin,
                                                                             other_campaign_admin):
    settings.MODEL_STORE = str(tmp_path)
    (tmp_path / "base" / "tiny-model").mkdir(parents=True)
    (tmp_path / "base" / "tiny-model" / "manifest.json").write_text("{}")
    (tmp_path / "base" / "half-written").mkdir()  # no manifest: not a published model
    mine = CampaignFactory(name="mine")
    PolicyVersion.objects.create(campaign=mine, version=0, path="/store/mine-v0", sha256="0" * 64)
    PolicyVersion.objects.create(campaign=mine, version=1, path="/store/mine-v1", sha256="1" * 64)
    html = login(campaign_admin).get("/console/campaigns/new/").content.decode()
    datalist = html.split('<datalist id="base-model-choices">')[1].split("</datalist>")[0]
    assert f'value="{tmp_path / "base" / "tiny-model"}"' in datalist and "half-written" not in datalist
    assert 'value="/store/mine-v1"' in datalist and "mine-v0" not in datalist
    assert "&quot;num_iterations&quot;" in html and "Training on a CPU?" in html
    # a campaign the admin does not read is not offered
    assert "mine-v1" not in login(other_campaign_admin).get("/console/campaigns/new/").content.decode()

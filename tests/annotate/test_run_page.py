"""Issue 17: a run's console page as an experiment tracker shows it (the
stage timeline with the queue wait and an ETA, the query count), two runs
compared (shared metrics, config differences, who may read them), and
progress that grows with work (the Reporter's parts). No ML runs here."""
import json
import re

import pytest

from annotate.models import TrainingRun
from annotate.training.bookkeeping import training_stage_begin
from annotate.training.runs import training_run_start
from tests.annotate.test_runs_console import engineer_browser, trained_round  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


def test_run_timeline_places_each_stage_by_its_times_with_the_queue_wait(open_round):
    from datetime import timedelta

    from annotate.selectors.run_page import run_timeline

    # given: created at t0; snapshot queued at 0, ran 10..20; reward queued 20, ran 30..60; policy running since 70
    run = TrainingRun.objects.create(campaign=open_round.campaign, round=open_round, kind="train", stage="policy",
                                     status="running", progress=0.25)
    t0 = run.created_at
    at = lambda s: (t0 + timedelta(seconds=s)).isoformat()  # noqa: E731
    run.stages = {
        "snapshot": {"status": "succeeded", "queued_at": at(0), "started_at": at(10), "finished_at": at(20)},
        "reward": {"status": "succeeded", "queued_at": at(20), "started_at": at(30), "finished_at": at(60)},
        "policy": {"status": "running", "queued_at": at(60), "started_at": at(70)},
    }
    # when: looked at 100 s after the run was created
    timeline = run_timeline(run, now=t0 + timedelta(seconds=100))
    # then: percentages of the 100 s, the running stage up to now, the stages not reached empty
    rows = {r["name"]: r for r in timeline["stages"]}
    assert timeline["seconds"] == 100
    assert rows["snapshot"]["wait"] == {"left": 0, "width": 10} and rows["snapshot"]["work"] == {"left": 10, "width": 10}
    assert rows["reward"]["wait_s"] == 10 and rows["reward"]["work"] == {"left": 30, "width": 30}
    assert rows["policy"]["work"] == {"left": 70, "width": 30} and rows["policy"]["work_s"] == 30
    # 30 s for a quarter of the work: about 90 s left
    assert rows["policy"]["eta_s"] == 90 and rows["snapshot"]["eta_s"] is None
    assert rows["generate"]["wait"] is None and rows["generate"]["work"] is None and rows["open"]["status"] == "pending"


def test_run_page_renders_the_timeline_and_eta_in_a_fixed_number_of_queries(
    open_round, engineer_browser, django_assert_num_queries
):
    from django.utils import timezone

    started = timezone.now().isoformat()
    run = TrainingRun.objects.create(
        campaign=open_round.campaign, round=open_round, kind="train", stage="reward", status="running", progress=0.5,
        stages={"snapshot": {"status": "succeeded", "queued_at": started, "started_at": started, "finished_at": started},
                "reward": {"status": "running", "queued_at": started, "started_at": started}},
        metrics_history=[{"stage": "reward", "step": s, "reward/loss": 1 / s} for s in range(1, 40)],
    )
    for _ in range(5):
        TrainingRun.objects.create(campaign=open_round.campaign, kind="bootstrap", status="succeeded")
    engineer_browser.get(f"/console/runs/{run.pk}/")  # warm the session
    # session, user, roles, the run, the runs to compare with
    with django_assert_num_queries(5):
        html = engineer_browser.get(f"/console/runs/{run.pk}/").content.decode()
    from annotate.training.stages import STAGES

    assert html.count('class="tl-row') == len(STAGES["train"]) and 'data-stage="reward"' in html
    assert "left</span>" in html  # the reward stage's ETA beside its bar
    assert html.count('<option value="') == 5  # the campaign's other runs to compare with


@pytest.fixture
def two_runs(open_round):
    history = lambda lr: [{"stage": "reward", "step": s, "reward/loss": lr / s, "reward/accuracy": 0.5} for s in range(1, 5)] + [  # noqa: E731
        {"stage": "reward", "step": 4, "eval/reward/accuracy": 0.5 + lr / 10}]
    a = TrainingRun.objects.create(campaign=open_round.campaign, round=open_round, kind="train", status="succeeded",
                                   config={"method": "rloo", "reward": {"lr": 1e-5, "epochs": 1}},
                                   metrics_history=history(1) + [{"stage": "policy", "step": 1, "policy/kl": 0.1}])
    b = TrainingRun.objects.create(campaign=open_round.campaign, kind="train", status="succeeded",
                                   config={"method": "dpo", "reward": {"lr": 1e-5, "epochs": 2}, "dpo": {"beta": 0.1}},
                                   metrics_history=history(2))
    return a, b


def test_compare_runs_overlays_shared_metrics_and_lists_config_differences(two_runs, engineer_browser,
                                                                            django_assert_num_queries):
    a, b = two_runs
    engineer_browser.get("/console/")
    # session, user, roles, run a, run b
    with django_assert_num_queries(5):
        page = engineer_browser.get(f"/console/runs/compare/?a={a.pk}&b={b.pk}")
    assert page.status_code == 200
    html = page.content.decode()
    data = json.loads(html.split('id="compare-data" type="application/json">')[1].split("</script>")[0])
    assert [m["name"] for m in data] == ["reward/loss", "reward/accuracy"]
    values = html.split('<table id="compare-values"')[1].split("</table>")[0]
    assert re.findall(r'<tr data-metric="([^"]+)"', values) == ["eval/reward/accuracy"]
    assert "0.6 <small" in values and "0.7 <small" in values
    assert data[0]["a"][1] == [2, 0.5] and data[0]["b"][1] == [2, 1.0] and data[1]["range"] == [0, 1]
    rows = re.findall(r'<tr data-key="([^"]+)">', html)
    assert rows == ["dpo.beta", "method", "reward.epochs"]
    assert "policy/kl" in html.split('id="compare-only"')[1]


def test_compare_runs_is_a_404_for_a_run_the_user_cannot_read_and_a_400_without_two_ids(
    two_runs, client, other_campaign_admin, campaign_admin, annotator, ml_engineer
):
    a, b = two_runs
    url = f"/console/runs/compare/?a={a.pk}&b={b.pk}"
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(annotator)
    assert client.get(url).status_code == 403
    client.force_login(other_campaign_admin)
    assert client.get(url).status_code == 404
    assert client.get(f"/console/runs/compare/?a={a.pk}&b=999999").status_code == 404
    client.force_login(campaign_admin)
    assert client.get(url).status_code == 200
    client.force_login(ml_engineer)
    missing = client.get(f"/console/runs/compare/?a={a.pk}&b=x")
    assert missing.status_code == 400 and "b should be a run id" in missing.content.decode()


def test_reporter_parts_make_one_bar_that_never_moves_back(trained_round, enqueued):
    # given: a stage of two pieces (generate: 6 answers of the new policy, then 2 of the previous)
    from annotate.training.reporter import Reporter

    run = training_stage_begin(run_id=training_run_start(campaign=trained_round.campaign).pk, stage="snapshot")
    reporter = Reporter(run, "snapshot", every_s=0, check_every_s=3600)
    seen = []
    first, second = reporter.part(0, 6, 8), reporter.part(6, 2, 8)
    # when: each piece reports its own 0..1
    for fraction in (0.5, 1.0):
        first(fraction)
        seen.append(TrainingRun.objects.get(pk=run.pk).progress)
    for fraction in (0.0, 0.5, 1.0):
        second(fraction)
        seen.append(TrainingRun.objects.get(pk=run.pk).progress)
    # then: answers done over all answers, never back to 0 and never 100% before the end
    assert seen == pytest.approx([3 / 8, 6 / 8, 6 / 8, 7 / 8, 1.0])
    reporter.progress(0.2)
    assert TrainingRun.objects.get(pk=run.pk).progress == 1.0


# --- the models page ------------------------------------------------------------------


def rated_chain(make_user, versions: int = 3, prompts: int = 12):
    """Rounds 0..versions-1, each round's candidate preferred two times in three."""
    from annotate.models import Role
    from tests.factories import ratings_bulk_create, version_chain_rounds

    annotators = [make_user(Role.ANNOTATOR, username=f"rater{i}") for i in range(3)]
    rounds = version_chain_rounds(versions=versions, prompts=prompts, annotators=annotators, overlap=3)
    ratings_bulk_create(
        {"comparison": c, "annotator": a, "strength": 1,
         "choice": ("A" if c.candidate_is_a else "B") if (c.pk + a.pk) % 3 else ("B" if c.candidate_is_a else "A")}
        for r in rounds for c in r.comparisons.all() for a in annotators
    )
    return rounds[0].campaign


def test_scores_by_round_are_fitted_on_the_ratings_up_to_each_round(make_user):
    from annotate.selectors.leaderboard import campaign_leaderboard

    campaign = rated_chain(make_user)
    board = campaign_leaderboard(campaign=campaign, resamples=20, by_round=True)
    by_round = board["by_round"]
    assert by_round["rounds"] == [0, 1, 2]
    scores = {m["name"]: m for m in by_round["models"]}
    # round 0 pairs two samples of v0: nobody is scored yet; v2 first meets anyone in round 2
    assert [scores[v]["score"][0] for v in ("v0", "v1", "v2")] == [None, None, None]
    assert scores["v2"]["score"][1] is None and scores["v2"]["score"][2] is not None
    assert scores["v1"]["score"][1] > scores["v0"]["score"][1]
    # after the last round: the leaderboard's own fit of every rating
    final = {m["name"]: m["score"] for m in board["models"]}
    assert {name: m["score"][-1] for name, m in scores.items()} == pytest.approx(final)
    assert all(m["lower"][-1] <= m["score"][-1] <= m["upper"][-1] for m in scores.values())
    assert "by_round" not in campaign_leaderboard(campaign=campaign, resamples=0)  # the API's board stays as it was


def test_models_page_shows_versions_metrics_as_short_tables(make_user, client, ml_engineer):
    from annotate.models import PolicyVersion, RewardModelVersion

    campaign = rated_chain(make_user, versions=2, prompts=4)
    long_metrics = {f"reward/extra_{i}": i / 10 for i in range(15)}
    RewardModelVersion.objects.create(campaign=campaign, version=1, path="/r", sha256="e" * 64,
                                      metrics={"eval/reward/accuracy": 0.75, "reward/loss": 0.4, **long_metrics})
    PolicyVersion.objects.filter(campaign=campaign, version=1).update(metrics={"policy/kl": 0.02, "policy/loss": -0.1})
    client.force_login(ml_engineer)
    html = client.get(f"/console/campaigns/{campaign.pk}/models/").content.decode()
    rewards = html.split('<table id="reward-versions"')[1].split("</table>")[0]
    assert re.findall(r'<th scope="col"><code>([^<]+)</code></th>', rewards) == ["eval/reward/accuracy", "reward/loss"]
    assert "15 more" in rewards and "0.75" in rewards
    policies = html.split('<table id="policy-versions"')[1].split("</table>")[0]
    assert re.findall(r'<th scope="col"><code>([^<]+)</code></th>', policies) == ["policy/kl", "policy/loss"]
    assert 'id="score-by-round-data"' in html
    # the compare-two-versions link still opens on the latest two
    assert "/compare/" in html
    compare = client.get(f"/console/campaigns/{campaign.pk}/compare/").content.decode()
    assert 'value="0" selected' in compare and 'value="1" selected' in compare


def test_a_diverged_metric_is_a_gap_not_a_nan_the_page_cannot_parse():
    # SQLite stores NaN in a JSON field (PostgreSQL refuses it); JSON.parse in the page would fail on it
    from annotate.selectors.run_page import metric_series

    history = [{"stage": "reward", "step": s, "reward/loss": v} for s, v in enumerate([0.7, 0.6, float("nan"), 0.5])]
    assert metric_series(history)["reward/loss"] == [[0, 0.7], [1, 0.6], [2, None], [3, 0.5]]


def test_the_run_page_shows_the_sft_stages_metrics_first_among_the_key_ones_and_its_snapshot(
    open_round, engineer_browser
):
    # given: a run whose sft stage reported a loss curve and a held-out eval, then the reward stage
    history = [{"stage": "sft", "step": s, "sft/loss": 3 / s, "sft/tokens_per_s": 900.0} for s in range(1, 6)]
    history += [{"stage": "sft", "step": 5, "eval/sft/loss": 1.2, "eval/sft/token_accuracy": 0.4}]
    history += [{"stage": "reward", "step": s, "reward/loss": 1 / s} for s in range(1, 6)]
    run = TrainingRun.objects.create(
        campaign=open_round.campaign, round=open_round, kind="train", status="succeeded", metrics_history=history,
        sft_dataset_path="/store/run-sft", sft_dataset_sha256="ef" * 32,
    )
    # when
    html = engineer_browser.get(f"/console/runs/{run.pk}/").content.decode()
    # then: the key section draws sft/loss before reward/loss, each with its meaning; the evals as values
    key = html.split('id="key-metrics"')[1].split("</section>")[0]
    charts = re.findall(r'<figure class="metric-chart" data-metric="([^"]+)"', key)
    assert charts == ["sft/loss", "reward/loss"]
    assert "loss per assistant token of the demonstrations" in key
    values = re.findall(r'<tr data-metric="([^"]+)"', key)
    assert values == ["eval/sft/loss", "eval/sft/token_accuracy"]
    # the throughput is not a key metric: folded with the others
    assert "sft/tokens_per_s" not in key and 'data-metric="sft/tokens_per_s"' in html
    # and the demonstrations snapshot it trained on, with its download
    assert 'id="sft-dataset-sha256">' + "ef" * 32 in html
    assert f'href="/api/training-runs/{run.pk}/sft-dataset/"' in html

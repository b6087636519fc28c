"""A training run's console page in real Chromium: the metric curves drawn as
SVG (a path per metric, grouped by stage, a live run's new stage drawn as it
reports), the stage progress bars, and Cancel. The run's rows
are built directly: no ML runs. Screenshot: tests/artifacts/screenshots/console-run.png."""
import math

import pytest

from annotate.models import Role, Round, TrainingRun
from tests.browser.conftest import SCREENSHOTS


@pytest.fixture
def engineer_run(page, live_server, transactional_db):
    from django.test import Client

    from tests.factories import UserFactory, open_round

    engineer = UserFactory(username="browser-engineer", roles=[Role.ML_ENGINEER])
    round_ = open_round(prompts=2, name="Runs console campaign")
    Round.objects.filter(pk=round_.pk).update(status=Round.Status.TRAINING)
    history = [{"stage": "reward", "step": s, "reward/loss": 0.7 * math.exp(-s / 10), "reward/accuracy": 0.5 + s / 80}
               for s in range(1, 31)]
    history += [{"stage": "reward", "step": 30, "eval/reward/accuracy": 0.71}]
    history += [{"stage": "policy", "step": s, "policy/kl": 0.001 * s, "policy/reward_mean": -0.5 + s / 20}
                for s in range(1, 21)]
    run = TrainingRun.objects.create(
        campaign=round_.campaign, round=round_, kind=TrainingRun.Kind.TRAIN, stage="policy",
        status=TrainingRun.Status.RUNNING, progress=0.4, triggered_by=engineer,
        config={"method": "rloo", "reward": {"epochs": 2}, "policy": {"beta": 0.05}},
        dataset_path="/store/campaign/datasets/run-1", dataset_sha256="5" * 64,
        stages={"snapshot": {"status": "succeeded", "seconds": 0.4, "attempts": 1, "outputs": {"pairs": 2}},
                "reward": {"status": "succeeded", "seconds": 12.5, "attempts": 1, "outputs": {"reward_version": 1}},
                "policy": {"status": "running", "attempts": 1}},
        metrics_history=history,
    )
    client = Client()
    client.force_login(engineer)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return run


def test_engineer_sees_curves_and_progress_then_cancels_the_run(page, live_server, engineer_run):
    run = engineer_run
    page.goto(f"{live_server.url}/console/runs/{run.pk}/")
    page.wait_for_selector("#plots[data-drawn='5']")
    for metric in ["reward/loss", "reward/accuracy", "eval/reward/accuracy", "policy/kl", "policy/reward_mean"]:
        path = page.locator(f"svg[data-metric='{metric}'] path.series")
        assert path.count() == 1
        assert path.get_attribute("d").startswith("M")
    assert page.locator("svg[data-metric='reward/loss'] path.series").get_attribute("d").count("L") == 29
    bars = page.locator(".stage-bar progress")
    assert bars.count() == 5
    assert [bars.nth(i).evaluate("p => p.value") for i in range(5)] == [1, 1, pytest.approx(0.4), 0, 0]
    assert "5" * 64 in page.text_content("#dataset-sha256")
    # the poll picks up progress written by the worker
    TrainingRun.objects.filter(pk=run.pk).update(progress=0.8)
    page.wait_for_function("() => document.querySelector('#bar-%d-policy').value > 0.7" % run.pk)
    page.screenshot(path=str(SCREENSHOTS / "console-run.png"), full_page=True)
    # when
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-run")
    # then
    page.wait_for_selector("#run-status.status-cancelled")
    assert "cancelled by browser-engineer" in page.text_content("#run-error")
    assert page.locator("#cancel-run").count() == 0
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert Round.objects.get(pk=run.round_id).status == Round.Status.COLLECTING
    page.screenshot(path=str(SCREENSHOTS / "console-run-cancelled.png"), full_page=True)


def test_runs_list_links_to_the_run(page, live_server, engineer_run):
    page.goto(f"{live_server.url}/console/campaigns/{engineer_run.campaign_id}/runs/")
    assert page.locator(f"#run-list tr[data-run='{engineer_run.pk}'] progress").count() == 5
    page.click(f"text=Run {engineer_run.pk}")
    page.wait_for_selector("#plots[data-drawn='5']")


def test_a_live_run_draws_the_curves_of_a_stage_that_started_after_the_page_loaded(page, live_server, engineer_run):
    run = engineer_run
    history = run.metrics_history
    TrainingRun.objects.filter(pk=run.pk).update(metrics_history=[h for h in history if h["stage"] == "reward"])
    page.goto(f"{live_server.url}/console/runs/{run.pk}/")
    page.wait_for_selector("#plots[data-drawn='3']")
    assert page.locator(".plot-group[data-stage='policy']").count() == 0
    # when: the policy stage reports (the poll reads the run every 2 s)
    TrainingRun.objects.filter(pk=run.pk).update(metrics_history=history)
    # then
    page.wait_for_selector("#plots[data-drawn='5']")
    assert page.locator(".plot-group").evaluate_all("gs => gs.map(g => g.dataset.stage)") == ["reward", "policy"]
    assert page.locator(".plot-group[data-stage='policy'] svg").evaluate_all(
        "svgs => svgs.map(s => s.dataset.metric)") == ["policy/kl", "policy/reward_mean"]

"""A training run's console page in real Chromium, wide (1400x900) and on a
phone (390x844): the stage timeline, the key metrics' curves drawn by
charts.js (uPlot) over the step, a metric reported once as a value, the
progress bars and their ETA moving with the poll, Cancel; the compare page
overlaying two runs. No console errors, nothing wider than the viewport.
The run's rows are built directly: no ML runs. Screenshots:
tests/artifacts/screenshots/<test>-<width>.png."""
import math
from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.models import Role, Round, TrainingRun
from annotate.training.stages import STAGES
from tests.browser.conftest import SCREENSHOTS

SIZES = [(1400, 900), (390, 844)]


def history():
    rows = [{"stage": "reward", "step": s, "reward/loss": 0.7 * math.exp(-s / 10), "reward/accuracy": 0.5 + s / 80}
            for s in range(1, 31)]
    rows += [{"stage": "reward", "step": 30, "eval/reward/accuracy": 0.71}]
    rows += [{"stage": "policy", "step": s, "policy/kl": 0.001 * s, "policy/reward_mean": -0.5 + s / 20}
             for s in range(1, 21)]
    return rows


@pytest.fixture
def engineer_run(page, live_server, transactional_db):
    from django.test import Client

    from tests.factories import UserFactory, open_round

    engineer = UserFactory(username="browser-engineer", roles=[Role.ML_ENGINEER])
    round_ = open_round(prompts=2, name="Runs console campaign")
    Round.objects.filter(pk=round_.pk).update(status=Round.Status.TRAINING)
    t0 = timezone.now() - timedelta(seconds=120)
    at = lambda s: (t0 + timedelta(seconds=s)).isoformat()  # noqa: E731
    run = TrainingRun.objects.create(
        campaign=round_.campaign, round=round_, kind=TrainingRun.Kind.TRAIN, stage="policy",
        status=TrainingRun.Status.RUNNING, progress=0.4, triggered_by=engineer,
        config={"method": "rloo", "reward": {"epochs": 2}, "policy": {"beta": 0.05}},
        dataset_path="/store/campaign/datasets/run-1", dataset_sha256="5" * 64,
        stages={"snapshot": {"status": "succeeded", "seconds": 0.4, "attempts": 1, "outputs": {"pairs": 2},
                             "queued_at": at(0), "started_at": at(5), "finished_at": at(6)},
                "sft": {"status": "succeeded", "seconds": 0.01, "attempts": 1,
                        "outputs": {"skipped": True, "reason": "no accepted demonstrations"},
                        "queued_at": at(6), "started_at": at(6), "finished_at": at(6)},
                "reward": {"status": "succeeded", "seconds": 12.5, "attempts": 1,
                           "outputs": {"reward_version": 1, "path": "/store/campaign-1/reward-run1/" + "x" * 80},
                           "queued_at": at(6), "started_at": at(20), "finished_at": at(60)},
                "policy": {"status": "running", "attempts": 1, "queued_at": at(60), "started_at": at(64)}},
        metrics_history=history(),
    )
    TrainingRun.objects.filter(pk=run.pk).update(created_at=t0)
    client = Client()
    client.force_login(engineer)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return TrainingRun.objects.get(pk=run.pk)


def watch_errors(page) -> list[str]:
    errors = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(str(err)))
    return errors


def assert_fits(page, width: int) -> None:
    """Nothing sticks out of the viewport: the document does not scroll
    sideways, and no element's box ends past its right edge (a wide table
    scrolls inside its own box, whose own width fits)."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    wide = page.evaluate("""(w) => [...document.querySelectorAll('body *')].filter((e) => {
        const r = e.getBoundingClientRect();
        if (!r.width || r.right <= w + 1) return false;
        for (let p = e.parentElement; p; p = p.parentElement) {
          const s = getComputedStyle(p);
          if (['auto', 'scroll', 'hidden'].includes(s.overflowX) && p.getBoundingClientRect().right <= w + 1) return false;
          if (p.tagName === 'DETAILS' && !p.open) return false;
        }
        return true;
      }).map((e) => e.tagName + '#' + e.id + '.' + e.className)""", width)
    assert wide == []


@pytest.mark.parametrize("width,height", SIZES)
def test_run_page_draws_the_timeline_and_key_curves_and_fits_the_screen(page, live_server, engineer_run, width, height):
    page.set_viewport_size({"width": width, "height": height})
    errors = watch_errors(page)
    run = engineer_run
    page.goto(f"{live_server.url}/console/runs/{run.pk}/")
    page.wait_for_selector("#metrics[data-drawn]")
    # the key curves, drawn by uPlot over the step; the rest folded
    assert page.evaluate("typeof window.uPlot") == "function"
    assert page.locator("#key-metrics .chart-box .uplot").count() == 3
    assert page.locator("#key-metrics figure").evaluate_all("fs => fs.map(f => f.dataset.metric)") == [
        "reward/loss", "policy/reward_mean", "policy/kl"]
    assert page.locator("#key-metrics figure[data-metric='reward/loss'] canvas").count() == 1
    # the eval accuracy, reported once, is a value with its step, not a dot
    assert page.locator("#key-metrics figure[data-metric='eval/reward/accuracy']").count() == 0
    assert "0.71" in page.text_content("#key-metrics tr[data-metric='eval/reward/accuracy']")
    assert not page.locator("#other-metrics").get_attribute("open")
    # the timeline: a work bar for each stage that ran, a wait bar where it queued
    assert page.locator("#timeline .tl-row").count() == len(STAGES["train"])
    assert page.locator("#timeline .tl-row[data-stage='reward'] .tl-wait").count() == 1
    reward_work = page.locator("#timeline .tl-row[data-stage='reward'] .tl-work").bounding_box()
    snapshot_work = page.locator("#timeline .tl-row[data-stage='snapshot'] .tl-work").bounding_box()
    assert reward_work["x"] > snapshot_work["x"] and reward_work["width"] > snapshot_work["width"]
    # progress and ETA of the running stage
    bars = page.locator(".stage-bar progress")
    assert [bars.nth(i).evaluate("p => p.value") for i in range(6)] == [1, 1, 1, pytest.approx(0.4), 0, 0]
    assert page.locator(".stage-bar[data-stage='sft'] .stage-status").text_content() == "skipped"
    assert "left" in page.text_content(".stage-bar[data-stage='policy'] .stage-eta")
    assert_fits(page, width)
    page.screenshot(path=str(SCREENSHOTS / f"test_run_page-{width}.png"), full_page=True)
    page.click("#other-metrics > summary")
    page.wait_for_function("document.querySelectorAll('#other-metrics .uplot').length == 0 || "
                           "document.querySelector('#other-metrics .uplot').getBoundingClientRect().width > 0")
    assert_fits(page, width)
    assert errors == []


def test_progress_and_new_metrics_arrive_with_the_poll_then_cancel(page, live_server, engineer_run):
    run = engineer_run
    errors = watch_errors(page)
    TrainingRun.objects.filter(pk=run.pk).update(metrics_history=[h for h in history() if h["stage"] == "reward"])
    page.goto(f"{live_server.url}/console/runs/{run.pk}/")
    page.wait_for_selector("#metrics[data-drawn='2']")  # reward/loss, and reward/accuracy folded
    # when: the worker writes progress and the policy stage reports (the poll reads the run every 2 s)
    TrainingRun.objects.filter(pk=run.pk).update(progress=0.8, metrics_history=history())
    # then
    page.wait_for_function("() => document.querySelector('#bar-%d-policy').value > 0.7" % run.pk)
    page.wait_for_selector("#key-metrics figure[data-metric='policy/kl'] .uplot")
    assert page.locator("#key-metrics .chart-box .uplot").count() == 3
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
    assert errors == []


def test_runs_list_links_to_the_run(page, live_server, engineer_run):
    page.goto(f"{live_server.url}/console/campaigns/{engineer_run.campaign_id}/runs/")
    assert page.locator(f"#run-list tr[data-run='{engineer_run.pk}'] progress").count() == len(STAGES["train"])
    page.click(f"text=Run {engineer_run.pk}")
    page.wait_for_selector("#metrics[data-drawn='4']")  # 3 key curves, reward/accuracy folded


@pytest.mark.parametrize("width,height", SIZES)
def test_compare_two_runs_overlays_their_curves(page, live_server, engineer_run, width, height):
    page.set_viewport_size({"width": width, "height": height})
    errors = watch_errors(page)
    run = engineer_run
    other = TrainingRun.objects.create(
        campaign=run.campaign, kind=TrainingRun.Kind.TRAIN, status=TrainingRun.Status.SUCCEEDED,
        config={"method": "rloo", "reward": {"epochs": 1}, "policy": {"beta": 0.05}},
        metrics_history=[{**h, "reward/loss": h["reward/loss"] * 1.5} if "reward/loss" in h else h
                         for h in history() if h["stage"] == "reward"],
    )
    # chosen on the run page
    page.goto(f"{live_server.url}/console/runs/{run.pk}/")
    page.select_option("#compare-b", str(other.pk))
    page.click("#compare-runs-form button")
    page.wait_for_selector("#compare-metrics[data-drawn='2']")
    assert page.url.endswith(f"/console/runs/compare/?a={run.pk}&b={other.pk}")
    loss = page.locator("#compare-metrics figure[data-metric='reward/loss']")
    assert loss.locator(".uplot").count() == 1
    assert f"run {run.pk}" in loss.text_content() and f"run {other.pk}" in loss.text_content()
    assert page.locator("#config-differences tr[data-key='reward.epochs']").count() == 1
    # the eval accuracy, reported once by each, is two values side by side, not two lone dots
    assert page.locator("#compare-metrics figure[data-metric='eval/reward/accuracy']").count() == 0
    assert page.locator("#compare-values tr[data-metric='eval/reward/accuracy'] td.num").all_text_contents() == [
        "0.71 (30)", "0.71 (30)"]
    assert_fits(page, width)
    page.screenshot(path=str(SCREENSHOTS / f"test_compare_runs-{width}.png"), full_page=True)
    assert errors == []

"""Issue 5, visible side: cancelling a run (service, API, the Reporter that
stops a running stage), `manage.py train`, checkpoint and dataset downloads
as verified zips, and the console's runs, run, lineage and compare pages.
No ML runs here: stages are faked by calling the stage bookkeeping."""
import io
import json
import re
import uuid
import zipfile

import pytest
from django.core.management import CommandError, call_command
from django.http import StreamingHttpResponse

from annotate.errors import Conflict, ValidationFailed
from annotate.models import Lease, PolicyVersion, Answer, RewardModelVersion, Round, TrainingRun
from annotate.services.ratings import rating_create
from annotate.training.bookkeeping import training_stage_begin, training_stage_fail, training_stage_succeed
from annotate.training.runs import training_run_cancel, training_run_start
from tests.factories import PolicyVersionFactory, AnswerFactory, version_chain_rounds

pytestmark = pytest.mark.django_db


@pytest.fixture
def trained_round(open_round, annotator):
    comparison = open_round.comparisons.order_by("pk").first()
    Lease.objects.create(
        comparison=comparison, annotator=annotator, leased_at=open_round.opened_at, leased_until="2999-01-01T00:00Z"
    )
    rating_create(annotator=annotator, comparison_id=comparison.pk, choice="A", strength=2, idempotency_key=uuid.uuid4())
    return open_round


@pytest.fixture
def store(tmp_path, settings):
    from rlhf.store import ModelStore

    settings.MODEL_STORE = str(tmp_path / "store")
    return ModelStore(settings.MODEL_STORE)


def published_folder(store, tmp_path, name: str, files: dict[str, bytes]):
    src = tmp_path / f"src-{uuid.uuid4().hex}"
    src.mkdir()
    for rel, body in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(body)
    return store.publish(src, name)


# --- cancel -------------------------------------------------------------------


def test_training_run_cancel_stops_the_run_and_reopens_its_round(trained_round, ml_engineer, enqueued):
    # given: a run at its reward stage
    run = training_run_start(campaign=trained_round.campaign, user=ml_engineer)
    training_stage_begin(run_id=run.pk, stage="snapshot")
    training_stage_succeed(run_id=run.pk, stage="snapshot", outputs={})
    training_stage_begin(run_id=run.pk, stage="sft")
    training_stage_succeed(run_id=run.pk, stage="sft", outputs={"skipped": True})
    training_stage_begin(run_id=run.pk, stage="reward")
    # when
    cancelled = training_run_cancel(run=run, user=ml_engineer)
    # then
    assert cancelled.status == TrainingRun.Status.CANCELLED and cancelled.finished_at is not None
    assert cancelled.error == "cancelled by engineer"
    assert cancelled.stages["reward"]["status"] == "cancelled"
    trained_round.refresh_from_db()
    assert trained_round.status == Round.Status.COLLECTING and trained_round.closed_at is None
    # and a queued message for the run is a no-op
    assert training_stage_begin(run_id=run.pk, stage="reward") is None


def test_a_cancelled_round_can_be_trained_on_again_with_a_fresh_run(trained_round, ml_engineer, enqueued):
    first = training_run_start(campaign=trained_round.campaign, user=ml_engineer)
    training_run_cancel(run=first, user=ml_engineer)
    second = training_run_start(campaign=trained_round.campaign, user=ml_engineer)
    assert second.pk != first.pk and second.status == TrainingRun.Status.QUEUED
    assert Round.objects.get(pk=trained_round.pk).status == Round.Status.TRAINING
    assert TrainingRun.objects.get(pk=first.pk).status == TrainingRun.Status.CANCELLED


def test_training_run_cancel_refuses_a_finished_run(trained_round, ml_engineer, enqueued):
    run = training_run_start(campaign=trained_round.campaign)
    training_run_cancel(run=run, user=ml_engineer)
    with pytest.raises(Conflict, match="cancelled already"):
        training_run_cancel(run=run, user=ml_engineer)


def test_a_stage_that_finishes_after_cancel_neither_advances_nor_retries(trained_round, ml_engineer, enqueued):
    run = training_run_start(campaign=trained_round.campaign)
    training_stage_begin(run_id=run.pk, stage="snapshot")
    training_run_cancel(run=run, user=ml_engineer)
    training_stage_succeed(run_id=run.pk, stage="snapshot", outputs={})
    training_stage_begin(run_id=run.pk, stage="sft")
    training_stage_succeed(run_id=run.pk, stage="sft", outputs={"skipped": True})
    assert training_stage_fail(run_id=run.pk, stage="snapshot", error=RuntimeError("late")) is None
    run.refresh_from_db()
    assert (run.status, run.stage) == ("cancelled", "snapshot")
    assert enqueued == [] or all(stage == "snapshot" for _, stage in enqueued)


def test_reporter_raises_run_cancelled_once_the_run_is_cancelled(trained_round, ml_engineer, enqueued):
    from annotate.training.reporter import Reporter, RunCancelled

    run = training_run_start(campaign=trained_round.campaign)
    run = training_stage_begin(run_id=run.pk, stage="snapshot")
    reporter = Reporter(run, "snapshot", check_every_s=0)
    reporter.progress(0.2)
    reporter.metrics(1, {"reward/loss": 0.7})
    training_run_cancel(run=run, user=ml_engineer)
    with pytest.raises(RunCancelled):
        reporter.progress(0.4)
    with pytest.raises(RunCancelled):
        reporter.metrics(2, {"reward/loss": 0.6})
    run.refresh_from_db()
    assert [h["reward/loss"] for h in run.metrics_history] == [0.7]


def test_reporter_checks_the_status_at_most_once_per_interval(trained_round, django_assert_num_queries, enqueued):
    from annotate.training.reporter import Reporter

    run = training_stage_begin(run_id=training_run_start(campaign=trained_round.campaign).pk, stage="snapshot")
    reporter = Reporter(run, "snapshot", every_s=3600, check_every_s=3600)
    reporter.progress(0.1)  # the first call checks and writes
    with django_assert_num_queries(0):
        for i in range(50):
            reporter.progress(i / 100)


def test_a_running_stage_stops_cleanly_when_the_run_is_cancelled(trained_round, ml_engineer, enqueued, monkeypatch):
    # given: an endless fake stage that reports every step, cancelled after three
    import itertools

    from annotate.training import executor, steps

    published = []

    def long_stage(run, reporter):
        for step in itertools.count():
            if step == 3:
                training_run_cancel(run=run, user=ml_engineer)
            reporter.metrics(step, {"reward/loss": 1.0 / (step + 1)})
            reporter.progress(step / 1000)
        published.append(run.pk)
        return {}

    monkeypatch.setitem(steps.STAGE_FUNCTIONS, (TrainingRun.Kind.TRAIN, "snapshot"), long_stage)
    run = training_run_start(campaign=trained_round.campaign)
    # when
    delay = executor.training_stage_execute(run_id=run.pk, stage="snapshot")
    # then: no retry, nothing published, the run stays cancelled at its stage
    assert delay is None and published == []
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.stage == "snapshot"
    assert run.stages["snapshot"]["status"] == "cancelled"
    # it noticed at the Reporter's next status check (one every 2 s)
    assert len(run.metrics_history) >= 3 and run.metrics_history[-1]["t"] - run.metrics_history[0]["t"] < 10
    assert enqueued == []


def test_cancel_api_is_for_engineers_and_answers_409_for_a_finished_run(
    trained_round, ml_engineer_client, campaign_admin_client, enqueued
):
    run = training_run_start(campaign=trained_round.campaign)
    url = f"/api/training-runs/{run.pk}/cancel/"
    assert campaign_admin_client.post(url).status_code == 403
    answer = ml_engineer_client.post(url)
    assert answer.status_code == 200 and answer.data["status"] == "cancelled"
    again = ml_engineer_client.post(url)
    assert again.status_code == 409 and "only a queued or running run" in again.data["detail"]


# --- trigger with a method, manage.py train -----------------------------------


def test_trigger_api_stores_the_method_and_refuses_an_unknown_one(trained_round, ml_engineer_client, enqueued):
    url = f"/api/campaigns/{trained_round.campaign_id}/train/"
    refused = ml_engineer_client.post(url, {"method": "ppo"}, format="json")
    assert refused.status_code == 400 and "method must be one of rloo" in refused.data["detail"]
    assert TrainingRun.objects.count() == 0
    accepted = ml_engineer_client.post(url, {"method": "rloo", "config": {"reward": {"epochs": 1}}}, format="json")
    assert accepted.status_code == 202
    assert accepted.data["config"]["method"] == "rloo" and accepted.data["config"]["reward"] == {"epochs": 1}


def test_manage_py_train_starts_a_run_with_overrides(trained_round, enqueued, django_capture_on_commit_callbacks):
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "train", str(trained_round.campaign_id), "--method", "rloo", "--config", '{"policy": {"beta": 0.1}}',
            stdout=out,
        )
    run = TrainingRun.objects.get()
    assert f"run {run.pk}: queued at snapshot" in out.getvalue()
    assert run.config["policy"]["beta"] == 0.1 and run.config["method"] == "rloo"
    assert enqueued == [(run.pk, "snapshot")]


def test_manage_py_train_explains_bad_input(trained_round, enqueued):
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("train", str(trained_round.campaign_id), "--config", "{nope")
    with pytest.raises(CommandError, match="policy.klcoef"):
        call_command("train", str(trained_round.campaign_id), "--config", '{"policy": {"klcoef": 1}}')
    with pytest.raises(CommandError, match="method must be one of"):
        call_command("train", str(trained_round.campaign_id), "--method", "ppo")
    with pytest.raises(CommandError, match="No campaign 999999"):
        call_command("train", "999999")
    assert TrainingRun.objects.count() == 0


def test_manage_py_train_wait_reports_the_finished_run(trained_round, enqueued, monkeypatch):
    # given: the run is already cancelled by the time the command polls
    def start_and_cancel(**kwargs):
        run = training_run_start(**kwargs)
        return training_run_cancel(run=run)

    monkeypatch.setattr("annotate.management.commands.train.training_run_start", start_and_cancel)
    with pytest.raises(CommandError, match="cancelled: cancelled by the system"):
        call_command("train", str(trained_round.campaign_id), "--wait", "--poll", "0")


def test_method_validation_lists_the_choices():
    from annotate.training.runs import training_method_validate

    with pytest.raises(ValidationFailed, match="rloo"):
        training_method_validate(method="")


# --- downloads ------------------------------------------------------------------


def zip_of(answer) -> zipfile.ZipFile:
    assert isinstance(answer, StreamingHttpResponse)
    return zipfile.ZipFile(io.BytesIO(b"".join(answer.streaming_content)))


def test_policy_download_streams_a_zip_of_the_verified_folder(store, tmp_path, ml_engineer_client, campaign_admin_client):
    files = {"model.safetensors": b"\x00weights" * 1000, "config.json": b"{}", "tokenizer/vocab.json": b'{"a": 1}'}
    pub = published_folder(store, tmp_path, "campaign-1/policy-v1", files)
    version = PolicyVersionFactory(version=1, path=pub.path, sha256=pub.sha256)
    for client in (ml_engineer_client, campaign_admin_client):
        answer = client.get(f"/api/policy-versions/{version.pk}/download/")
        assert answer.status_code == 200 and answer["Content-Type"] == "application/zip"
        assert answer["X-Checksum-SHA256"] == pub.sha256
        archive = zip_of(answer)
        prefix = f"campaign-{version.campaign_id}-policy-v1/"
        assert sorted(archive.namelist()) == sorted(prefix + n for n in [*files, "manifest.json"])
        assert archive.read(prefix + "model.safetensors") == files["model.safetensors"]
        assert archive.testzip() is None


def test_a_large_checkpoint_streams_in_chunks(store, tmp_path, ml_engineer_client):
    big = bytes(range(256)) * (12 * 4096)  # 12 MiB
    pub = published_folder(store, tmp_path, "campaign-1/policy-big", {"model.safetensors": big})
    version = PolicyVersionFactory(version=1, path=pub.path, sha256=pub.sha256)
    answer = ml_engineer_client.get(f"/api/policy-versions/{version.pk}/download/")
    sizes = [len(chunk) for chunk in answer.streaming_content]
    assert sum(sizes) > len(big) and max(sizes) <= (1 << 20) + 4096 and len(sizes) > 10


def test_a_tampered_checkpoint_is_refused_with_409_and_nothing_sent(store, tmp_path, ml_engineer_client):
    pub = published_folder(store, tmp_path, "campaign-1/reward-run1", {"model.safetensors": b"good"})
    version = PolicyVersionFactory(version=1)
    reward = RewardModelVersion.objects.create(campaign=version.campaign, version=1, path=pub.path, sha256=pub.sha256)
    (tmp_path / "store" / "campaign-1" / "reward-run1" / "model.safetensors").write_bytes(b"evil")
    answer = ml_engineer_client.get(f"/api/reward-versions/{reward.pk}/download/")
    assert answer.status_code == 409
    assert "failed its sha256 check" in answer.data["detail"] and "model.safetensors" in answer.data["detail"]
    assert not isinstance(answer, StreamingHttpResponse)


def test_dataset_download_and_a_run_without_a_snapshot(store, tmp_path, open_round, ml_engineer_client):
    src = tmp_path / "preferences.jsonl"
    src.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    pub = store.publish_file(src, "campaign-1/datasets/run-1")
    run = TrainingRun.objects.create(
        campaign=open_round.campaign, round=open_round, kind="train", dataset_path=pub.path, dataset_sha256=pub.sha256
    )
    answer = ml_engineer_client.get(f"/api/training-runs/{run.pk}/dataset/")
    assert answer.status_code == 200 and answer["X-Checksum-SHA256"] == pub.sha256
    names = zip_of(answer).namelist()
    assert any(n.endswith("/preferences.jsonl") for n in names) and any(n.endswith("/manifest.json") for n in names)
    bare = TrainingRun.objects.create(campaign=open_round.campaign, kind="bootstrap")
    missing = ml_engineer_client.get(f"/api/training-runs/{bare.pk}/dataset/")
    assert missing.status_code == 404 and "no dataset snapshot" in missing.data["detail"]


def test_annotator_cannot_download(store, tmp_path, annotator_client):
    pub = published_folder(store, tmp_path, "campaign-1/policy-v1", {"a.safetensors": b"x"})
    version = PolicyVersionFactory(version=1, path=pub.path, sha256=pub.sha256)
    assert annotator_client.get(f"/api/policy-versions/{version.pk}/download/").status_code == 403


# --- console pages ----------------------------------------------------------------


@pytest.fixture
def engineer_browser(client, ml_engineer):
    client.force_login(ml_engineer)
    return client


def test_runs_page_lists_runs_with_a_bar_per_stage_in_a_fixed_number_of_queries(
    open_round, engineer_browser, django_assert_num_queries
):
    campaign = open_round.campaign
    TrainingRun.objects.create(campaign=campaign, kind="bootstrap", status="succeeded", stages={
        s: {"status": "succeeded"} for s in ("import", "generate", "open")
    })
    engineer_browser.get(f"/console/campaigns/{campaign.pk}/runs/")  # warm the session
    # session, user, roles, campaign, count, runs
    with django_assert_num_queries(6):
        small = engineer_browser.get(f"/console/campaigns/{campaign.pk}/runs/")
    for i in range(20):
        TrainingRun.objects.create(campaign=campaign, kind="bootstrap", status="running", stage="generate", progress=0.5)
    with django_assert_num_queries(6):
        large = engineer_browser.get(f"/console/campaigns/{campaign.pk}/runs/")
    assert small.status_code == large.status_code == 200
    html = large.content.decode()
    assert html.count('<progress id="bar-') == 21 * 3 and 'value="0.500"' in html
    newest = TrainingRun.objects.order_by("-created_at")[:2]
    assert f'/console/runs/compare/?a={newest[1].pk}&amp;b={newest[0].pk}" id="compare-runs-link"' in html
    assert "Train now" in html


def test_train_now_form_shows_the_validation_error_and_starts_a_run(trained_round, engineer_browser, enqueued):
    url = f"/console/campaigns/{trained_round.campaign_id}/runs/"
    bad = engineer_browser.post(url, {"method": "rloo", "config": '{"policy": {"klcoef": 1}}'})
    assert bad.status_code == 400 and "policy.klcoef" in bad.content.decode()
    not_json = engineer_browser.post(url, {"method": "rloo", "config": "{"})
    assert not_json.status_code == 400 and "not valid JSON" in not_json.content.decode()
    assert TrainingRun.objects.count() == 0
    ok = engineer_browser.post(url, {"method": "rloo", "config": '{"reward": {"epochs": 1}}'})
    run = TrainingRun.objects.get()
    assert ok.status_code == 302 and ok["Location"] == f"/console/runs/{run.pk}/"
    assert run.config["reward"]["epochs"] == 1 and run.config["method"] == "rloo"


def test_admin_sees_runs_but_cannot_train_or_cancel(trained_round, client, campaign_admin, enqueued):
    client.force_login(campaign_admin)
    run = training_run_start(campaign=trained_round.campaign)
    page = client.get(f"/console/campaigns/{trained_round.campaign_id}/runs/")
    assert page.status_code == 200 and "train-form" not in page.content.decode()
    assert client.post(f"/console/campaigns/{trained_round.campaign_id}/runs/", {"method": "rloo"}).status_code == 403
    assert client.post(f"/console/runs/{run.pk}/cancel/").status_code == 403
    assert TrainingRun.objects.get().status == "queued"


def test_run_page_shows_config_dataset_logs_and_error(open_round, engineer_browser):
    run = TrainingRun.objects.create(
        campaign=open_round.campaign, round=open_round, kind="train", stage="reward", status="failed",
        config={"reward": {"epochs": 3}, "method": "rloo"}, dataset_sha256="ab" * 32, dataset_path="/x",
        error="reward failed after 3 attempts: CUDA out of memory",
        stages={"snapshot": {"status": "succeeded", "seconds": 1.5, "attempts": 1, "outputs": {"pairs": 12}},
                "reward": {"status": "error", "attempts": 3, "last_error": "Traceback ... RuntimeError: CUDA out of memory"}},
        metrics_history=[{"stage": "reward", "step": 1, "reward/loss": 0.69}],
    )
    html = engineer_browser.get(f"/console/runs/{run.pk}/").content.decode()
    assert "&quot;epochs&quot;: 3" in html and "ab" * 32 in html and f"/api/training-runs/{run.pk}/dataset/" in html
    assert "CUDA out of memory" in html and "&quot;pairs&quot;: 12" in html and "1.5" in html
    assert "cancel-run" not in html  # finished: nothing to cancel
    # a metric reported once is a value in the key table, not a lone dot on a chart
    assert json.loads(html.split('id="run-charts" type="application/json">')[1].split("</script>")[0]) == {}
    row = html.split('<tr data-metric="reward/loss">')[1].split("</tr>")[0]
    assert "0.69" in row and "(1)" in row and "Bradley–Terry loss" in row


def test_run_page_puts_the_key_metrics_first_and_folds_the_rest(open_round, engineer_browser):
    # given: a DPO run's history as its stages report it (rows carry stage, step and time besides the metrics)
    history = [
        {"stage": "reward", "step": s, "t": float(s), "reward/tokens": 240.0 * s, "reward/accuracy": 0.5 + s / 100,
         "reward/loss": 0.69 - s / 100} for s in range(1, 6)
    ] + [
        {"stage": "reward", "step": 5, "t": 6.0, "eval/reward/accuracy": 0.6, "eval/reward/loss": 0.68,
         "eval/reward/pairs_margin_0-0.5": 4.0},
    ] + [
        {"stage": "policy", "step": s, "t": 6.0 + s, "policy/loss": 0.69, "policy/accuracy": 0.5, "policy/margin": 0.01}
        for s in range(1, 4)
    ] + [{"stage": "policy", "step": 3, "t": 10.0, "policy/kl": 0.003}]
    run = TrainingRun.objects.create(
        campaign=open_round.campaign, round=open_round, kind="train", stage="policy", status="succeeded",
        config={"method": "dpo"}, metrics_history=history,
    )
    # when
    html = engineer_browser.get(f"/console/runs/{run.pk}/").content.decode()
    # then: the key metrics first, in their order, curves where there are enough reports, values where not
    key, rest = html.split('<section id="key-metrics">')[1].split('<details id="other-metrics">')
    assert re.findall(r'<figure class="metric-chart" data-metric="([^"]+)"', key) == [
        "reward/loss", "policy/loss", "policy/accuracy"]
    assert re.findall(r'<tr data-metric="([^"]+)"', key) == ["eval/reward/accuracy", "eval/reward/loss", "policy/kl"]
    assert "held-out pairs the reward model orders as the raters did" in key
    # the rest folded, by stage: policy/margin and the reward curves as charts, the eval bucket as a value
    assert re.findall(r'<figure class="metric-chart" data-metric="([^"]+)"', rest) == [
        "policy/margin", "reward/accuracy", "reward/tokens"]
    assert re.findall(r'<tr data-metric="([^"]+)"', rest) == ["eval/reward/pairs_margin_0-0.5"]
    charts = json.loads(html.split('id="run-charts" type="application/json">')[1].split("</script>")[0])
    assert charts["reward/accuracy"]["range"] == [0, 1] and charts["reward/loss"]["range"] is None
    assert charts["reward/loss"]["points"][0] == [1, pytest.approx(0.68)] and len(charts["reward/loss"]["points"]) == 5


def test_lineage_page_shows_parent_run_reward_model_dataset_and_metrics(open_round, engineer_browser):
    campaign = open_round.campaign
    v0 = campaign.policy_versions.get(version=0)
    run = TrainingRun.objects.create(campaign=campaign, round=open_round, kind="train", dataset_sha256="cd" * 32)
    reward = RewardModelVersion.objects.create(
        campaign=campaign, version=1, path="/r", sha256="ef" * 32, training_run=run, dataset_sha256="cd" * 32,
        metrics={"eval/reward/accuracy": 0.75},
    )
    PolicyVersion.objects.create(
        campaign=campaign, version=1, parent=v0, path="/p", sha256="12" * 32, training_run=run, reward_model=reward,
        metrics={"policy/kl": 0.02},
    )
    html = engineer_browser.get(f"/console/campaigns/{campaign.pk}/lineage/").content.decode()
    row = html.split('<tr data-version="1">')[1].split("</tr>")[0]
    assert "v0" in row and f"run {run.pk}" in row and "r1" in row and "cdcdcdcdcdcd" in row and "policy/kl" in row
    assert "/api/policy-versions/" in row and "?a=0&amp;b=1" in row


def test_compare_page_shows_both_answers_side_by_side_paginated(ml_engineer, client):
    client.force_login(ml_engineer)
    rounds = version_chain_rounds(versions=2, prompts=25)
    campaign = rounds[0].campaign
    # a prompt only v0 answered is left out
    extra = AnswerFactory(
        prompt__campaign=campaign, prompt__external_id="only-v0", policy_version=campaign.policy_versions.get(version=0)
    )
    url = f"/console/campaigns/{campaign.pk}/compare/?a=0&b=1"
    first = client.get(url).content.decode()
    assert "25 prompts answered by both v0 and v1" in first
    assert first.count('<section class="pair"') == 20
    pair = first.split('data-prompt="p0"')[1].split("</section>")[0]
    assert "answer 0 of v0 to p0" in pair and "answer 0 of v1 to p0" in pair
    second = client.get(url + "&page=2").content.decode()
    assert second.count('<section class="pair"') == 5 and extra.prompt.external_id not in first + second
    bad = client.get(f"/console/campaigns/{campaign.pk}/compare/?a=0&b=7")
    assert bad.status_code == 400 and "Choose two versions" in bad.content.decode()


def test_compare_page_escapes_answers(ml_engineer, client):
    client.force_login(ml_engineer)
    campaign = version_chain_rounds(versions=2, prompts=1)[0].campaign
    Answer.objects.filter(policy_version__version=1).update(text="<script>alert(1)</script>")
    html = client.get(f"/console/campaigns/{campaign.pk}/compare/?a=0&b=1").content.decode()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html

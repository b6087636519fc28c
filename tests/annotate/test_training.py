"""Training runs as the web process sees them: start once, and the stage
bookkeeping that makes a crashed or failing stage stop after a bounded number
of tries (docs/architecture.md, invariant 5). The stages themselves (torch) never run
here: enqueueing is intercepted, since what is tested is the bookkeeping."""
import uuid

import pytest
from django.test import override_settings

from annotate.errors import Conflict
from annotate.models import Lease, Rating, Round, TrainingRun
from annotate.services.ratings import rating_create
from annotate.services.rounds import round_progress_check
from annotate.training.bookkeeping import training_stage_begin, training_stage_fail, training_stage_succeed
from annotate.training.runs import training_run_start
from annotate.training.stages import STAGES

pytestmark = pytest.mark.django_db


def rated(round_, annotator, choice="A"):
    """Have `annotator` rate the first comparison of the round."""
    comparison = round_.comparisons.order_by("pk").first()
    Lease.objects.create(
        comparison=comparison, annotator=annotator, leased_at=round_.opened_at, leased_until="2999-01-01T00:00Z"
    )
    rating, _ = rating_create(
        annotator=annotator, comparison_id=comparison.pk, choice=choice,
        strength=2 if choice in "AB" else None, idempotency_key=uuid.uuid4(),
    )
    return rating


@pytest.fixture
def trained_round(open_round, annotator):
    rated(open_round, annotator, "A")
    return open_round


def test_training_run_start_closes_the_round_and_creates_one_run(
    trained_round, ml_engineer, enqueued, django_capture_on_commit_callbacks
):
    # when
    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_start(campaign=trained_round.campaign, user=ml_engineer)
    # then
    trained_round.refresh_from_db()
    assert trained_round.status == Round.Status.TRAINING and trained_round.closed_at is not None
    assert TrainingRun.objects.get() == run
    assert (run.kind, run.status, run.stage, run.triggered_by) == ("train", "queued", "snapshot", ml_engineer)
    assert enqueued == [(run.pk, "snapshot")]


def test_the_campaign_kl_budget_goes_into_both_policy_methods_settings_of_the_run(trained_round, enqueued):
    campaign = trained_round.campaign
    campaign.kl_budget, campaign.training_config = 6.0, {"dpo": {"beta": 0.2}}
    campaign.save()
    run = training_run_start(campaign=campaign, overrides={"policy": {"kl_budget": 2.5}})
    # the campaign's budget, unless the run's own settings name one
    assert run.config["dpo"] == {"beta": 0.2, "kl_budget": 6.0} and run.config["policy"]["kl_budget"] == 2.5


def test_training_run_start_twice_returns_the_same_run(trained_round, enqueued, django_capture_on_commit_callbacks):
    # given
    with django_capture_on_commit_callbacks(execute=True):
        first = training_run_start(campaign=trained_round.campaign)
    # when
    with django_capture_on_commit_callbacks(execute=True):
        second = training_run_start(campaign=trained_round.campaign)
    # then
    assert second.pk == first.pk
    assert TrainingRun.objects.count() == 1
    assert enqueued == [(first.pk, "snapshot")]


def test_training_run_start_without_a_or_b_ratings_is_409(open_round, annotator, other_annotator, enqueued):
    # given: only a tie and a both-bad: nothing says which answer is better
    rated(open_round, annotator, "tie")
    rated(open_round, other_annotator, "both_bad")
    # when / then
    with pytest.raises(Conflict, match="nothing to train on"):
        training_run_start(campaign=open_round.campaign)
    open_round.refresh_from_db()
    assert open_round.status == Round.Status.COLLECTING
    assert TrainingRun.objects.count() == 0


def test_training_trigger_api_answers_409_without_ratings_and_202_with(open_round, annotator, ml_engineer_client, enqueued):
    url = f"/api/campaigns/{open_round.campaign_id}/train/"
    # when / then
    refused = ml_engineer_client.post(url, {}, format="json")
    assert refused.status_code == 409 and "nothing to train on" in refused.data["detail"]
    rated(open_round, annotator, "B")
    accepted = ml_engineer_client.post(url, {"config": {"reward": {"epochs": 1}}}, format="json")
    assert accepted.status_code == 202
    assert accepted.data["config"]["reward"] == {"epochs": 1}


@pytest.mark.parametrize(
    "campaign_config, override, named",
    [
        ({}, {"policy": {"klcoef": 1}}, "policy.klcoef"),
        ({}, {"reward": {"lr": -1e-5}}, "reward.lr must be more than 0, not -1e-05"),
        # valid on its own, wrong with the campaign's own setting: LoRA on top of training the top blocks
        ({"reward": {"trainable_layers": 4}}, {"reward": {"lora_r": 8}}, "set trainable_layers or lora_r, not both"),
    ],
)
def test_training_trigger_api_rejects_a_bad_config_override_and_keeps_collecting(
    trained_round, ml_engineer_client, enqueued, campaign_config, override, named
):
    # given
    campaign = trained_round.campaign
    campaign.training_config = campaign_config
    campaign.save()
    # when
    answer = ml_engineer_client.post(f"/api/campaigns/{campaign.pk}/train/", {"config": override}, format="json")
    # then
    assert answer.status_code == 400 and named in answer.data["detail"]
    trained_round.refresh_from_db()
    assert trained_round.status == Round.Status.COLLECTING
    assert TrainingRun.objects.count() == 0


def test_round_progress_check_starts_training_only_when_the_round_is_full_and_auto_train_is_on(
    make_open_round, annotator, other_annotator, enqueued
):
    # given: one comparison, k=2, auto_train on
    round_ = make_open_round(prompts=1, overlap=2, auto_train=True, annotators=[annotator, other_annotator])
    rated(round_, annotator, "A")
    assert round_progress_check(round_id=round_.pk) is None
    # when
    rated(round_, other_annotator, "B")
    run = round_progress_check(round_id=round_.pk)
    # then
    assert run is not None and run.round_id == round_.pk
    assert round_progress_check(round_id=round_.pk) is None  # round is training now


def test_round_progress_check_leaves_a_full_round_alone_when_auto_train_is_off(
    make_open_round, annotator, enqueued
):
    round_ = make_open_round(prompts=1, overlap=1, auto_train=False, annotators=[annotator])
    rated(round_, annotator, "A")
    assert round_progress_check(round_id=round_.pk) is None
    assert TrainingRun.objects.count() == 0


def test_training_stage_succeed_moves_to_the_next_stage_and_queues_it(
    trained_round, enqueued, django_capture_on_commit_callbacks
):
    # given
    run = training_run_start(campaign=trained_round.campaign)
    assert training_stage_begin(run_id=run.pk, stage="snapshot") is not None
    # when
    with django_capture_on_commit_callbacks(execute=True):
        training_stage_succeed(run_id=run.pk, stage="snapshot", outputs={"rows": 1})
    # then
    run.refresh_from_db()
    assert (run.stage, run.status, run.attempts) == ("sft", "queued", 0)
    assert run.stages["snapshot"]["status"] == "succeeded" and run.stages["snapshot"]["outputs"] == {"rows": 1}
    assert enqueued == [(run.pk, "sft")]
    # and a redelivered snapshot message is a no-op
    assert training_stage_begin(run_id=run.pk, stage="snapshot") is None


def test_training_run_succeeds_after_its_last_stage(trained_round, enqueued):
    run = training_run_start(campaign=trained_round.campaign)
    for stage in STAGES[TrainingRun.Kind.TRAIN]:
        assert training_stage_begin(run_id=run.pk, stage=stage) is not None
        training_stage_succeed(run_id=run.pk, stage=stage, outputs={})
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED and run.finished_at is not None
    assert training_stage_begin(run_id=run.pk, stage="open") is None


def test_training_stage_begin_ignores_a_stage_the_run_is_not_at(trained_round, enqueued):
    run = training_run_start(campaign=trained_round.campaign)
    assert training_stage_begin(run_id=run.pk, stage="policy") is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED and "policy" not in run.stages
    assert set(run.stages["snapshot"]) == {"queued_at"}  # sent, never begun


@override_settings(TRAINING_MAX_ATTEMPTS=3, TRAINING_RETRY_DELAY=5)
def test_training_stage_that_fails_is_retried_until_max_attempts_then_the_run_fails(trained_round, enqueued):
    # given
    run = training_run_start(campaign=trained_round.campaign)
    delays = []
    # when: the reward stage raises on every attempt
    for _ in range(3):
        assert training_stage_begin(run_id=run.pk, stage="snapshot") is not None
        delays.append(training_stage_fail(run_id=run.pk, stage="snapshot", error=RuntimeError("CUDA out of memory")))
    # then: two retries with growing delays, then the run and its round fail with the error visible
    assert delays == [5.0, 10.0, None]
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and run.finished_at is not None
    assert "CUDA out of memory" in run.error and "3 attempts" in run.error
    assert "RuntimeError" in run.stages["snapshot"]["last_error"]
    assert Round.objects.get(pk=trained_round.pk).status == Round.Status.FAILED
    # and a redelivered message does not start it again
    assert training_stage_begin(run_id=run.pk, stage="snapshot") is None


@override_settings(TRAINING_MAX_ATTEMPTS=2)
def test_training_stage_whose_worker_died_every_time_fails_the_run_on_the_next_begin(trained_round, enqueued):
    # given: the stage began twice and its worker was killed each time (no fail recorded)
    run = training_run_start(campaign=trained_round.campaign)
    assert training_stage_begin(run_id=run.pk, stage="snapshot") is not None
    assert training_stage_begin(run_id=run.pk, stage="snapshot") is not None
    # when: the broker redelivers it once more
    began = training_stage_begin(run_id=run.pk, stage="snapshot")
    # then
    assert began is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "started 2 times" in run.error
    assert Round.objects.get(pk=trained_round.pk).status == Round.Status.FAILED


@override_settings(TRAINING_MAX_ATTEMPTS=1)
def test_training_run_start_again_after_a_failure_resumes_the_failed_run(
    trained_round, enqueued, django_capture_on_commit_callbacks
):
    # given: a run that failed at the reward stage
    run = training_run_start(campaign=trained_round.campaign)
    training_stage_begin(run_id=run.pk, stage="snapshot")
    training_stage_succeed(run_id=run.pk, stage="snapshot", outputs={})
    training_stage_begin(run_id=run.pk, stage="sft")
    training_stage_succeed(run_id=run.pk, stage="sft", outputs={"skipped": True})
    training_stage_begin(run_id=run.pk, stage="reward")
    assert training_stage_fail(run_id=run.pk, stage="reward", error=ValueError("boom")) is None
    # when
    with django_capture_on_commit_callbacks(execute=True):
        again = training_run_start(campaign=trained_round.campaign)
    # then: the same run, queued at its failed stage
    assert again.pk == run.pk and TrainingRun.objects.count() == 1
    run.refresh_from_db()
    assert (run.status, run.stage, run.error) == ("queued", "reward", "")
    assert Round.objects.get(pk=trained_round.pk).status == Round.Status.TRAINING
    assert enqueued[-1] == (run.pk, "reward")
    # and the failed stage gets its tries afresh
    assert training_stage_begin(run_id=run.pk, stage="reward") is not None


def test_ratings_are_refused_once_the_round_is_training(trained_round, other_annotator, api_client_for, enqueued):
    # given: the other annotator holds a lease when training starts
    client = api_client_for(other_annotator)
    comparison = client.post(f"/api/campaigns/{trained_round.campaign_id}/next/").data["comparison"]
    training_run_start(campaign=trained_round.campaign)
    # when
    answer = client.post(
        "/api/ratings/", {"comparison": comparison, "choice": "tie", "idempotency_key": str(uuid.uuid4())}, format="json"
    )
    # then
    assert answer.status_code == 409 and "closed" in answer.data["detail"]
    assert Rating.objects.count() == 1
    # and there is no more work in the campaign
    assert client.post(f"/api/campaigns/{trained_round.campaign_id}/next/").status_code == 204


def test_a_running_stage_whose_heartbeat_stopped_is_queued_again_once(
    trained_round, enqueued, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from annotate.training.recovery import training_runs_requeue_stale

    # given: a run at its reward stage whose worker died long ago, and one whose worker is alive
    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_start(campaign=trained_round.campaign)
    training_stage_begin(run_id=run.pk, stage="snapshot")
    training_stage_succeed(run_id=run.pk, stage="snapshot", outputs={})
    training_stage_begin(run_id=run.pk, stage="sft")
    training_stage_succeed(run_id=run.pk, stage="sft", outputs={"skipped": True})
    training_stage_begin(run_id=run.pk, stage="reward")
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    enqueued.clear()
    # when
    with django_capture_on_commit_callbacks(execute=True):
        queued = training_runs_requeue_stale(stale_after_s=120)
    # then: its stage is queued again, and a second sweep right after leaves it alone
    assert queued == [run.pk] and enqueued == [(run.pk, "reward")]
    with django_capture_on_commit_callbacks(execute=True):
        assert training_runs_requeue_stale(stale_after_s=120) == []
    # and the requeued stage runs as a second attempt
    assert training_stage_begin(run_id=run.pk, stage="reward").attempts == 2


# --- the state machine's contracts --------------------------------------------------


def test_every_stage_of_every_kind_has_one_stage_function():
    from annotate.training.steps import STAGE_FUNCTIONS

    assert set(STAGE_FUNCTIONS) == {(kind, stage) for kind, stages in STAGES.items() for stage in stages}


def test_a_stage_record_refuses_a_key_or_status_it_does_not_describe(trained_round, enqueued):
    from annotate.training.stages import stage_record, stage_record_discard, stage_record_update

    run = training_run_start(campaign=trained_round.campaign)
    with pytest.raises(ValueError, match="StageRecord"):
        stage_record_update(run, "snapshot", attempt=1)
    with pytest.raises(ValueError):
        stage_record_update(run, "snapshot", status="done")
    with pytest.raises(ValueError, match="StageRecord"):
        stage_record_discard(run, "snapshot", "queued")
    assert set(stage_record(run, "snapshot")) == {"queued_at"}


def test_every_key_a_run_writes_on_its_stages_is_a_stage_record_key(trained_round, enqueued):
    from annotate.training.stages import STAGE_RECORD_KEYS

    # given: a run whose snapshot succeeded and whose reward stage failed once, then was cancelled
    run = training_run_start(campaign=trained_round.campaign)
    training_stage_begin(run_id=run.pk, stage="snapshot", task_id=run.celery_task_id)
    training_stage_succeed(run_id=run.pk, stage="snapshot", outputs={"pairs": 1})
    run.refresh_from_db()
    training_stage_begin(run_id=run.pk, stage="reward", task_id=run.celery_task_id)
    training_stage_fail(run_id=run.pk, stage="reward", error=RuntimeError("boom"))
    from annotate.training.runs import training_run_cancel

    training_run_cancel(run=run)
    # then
    run.refresh_from_db()
    written = {key for record in run.stages.values() for key in record}
    assert written <= STAGE_RECORD_KEYS, written - STAGE_RECORD_KEYS
    assert {"queued_at", "status", "started_at", "attempts", "task_id", "task_ids", "finished_at", "seconds",
            "outputs", "last_error"} <= written


def test_the_task_names_senders_use_are_registered_on_their_queues():
    from annotate.services.rounds import ROUND_PROGRESS_CHECK_TASK
    from annotate.training.queue import STAGE_TASK
    from config.celery import Queue, task_named

    assert task_named(STAGE_TASK).queue == Queue.GPU
    assert task_named(ROUND_PROGRESS_CHECK_TASK).queue == Queue.DEFAULT


def test_a_process_that_never_imported_the_tasks_finds_them_by_name():
    # given: a fresh interpreter, as the web process is: nothing has imported annotate.tasks
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, django; django.setup()\n"
        "from config.celery import task_named\n"
        "assert 'annotate.tasks' not in sys.modules\n"
        "print(task_named('annotate.tasks.training_stage_task').name)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    # when
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], env=env,
                          capture_output=True, text=True, timeout=120)
    # then
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "annotate.tasks.training_stage_task"

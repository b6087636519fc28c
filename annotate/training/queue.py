"""Sending a run's stage to the gpu queue, and revoking what was sent. Called
from the web process (start, cancel), from the worker (the next stage, a
retry) and from beat (recovery.py); the messages are handled by
annotate/tasks.py's training_stage_task, named here rather than imported
(config.celery.task_named says why)."""
import logging
import uuid
from functools import partial

from django.db import transaction
from django.utils import timezone

from annotate.models import TrainingRun
from annotate.training.stages import STAGES, stage_record_discard, stage_record_update
from config.celery import app, task_named

log = logging.getLogger(__name__)

STAGE_TASK = "annotate.tasks.training_stage_task"  # kwargs: run_id, stage


def training_run_enqueue(*, run: TrainingRun, countdown: float | None = None) -> None:
    """Queue the run's next stage once the surrounding transaction commits, so
    the worker never reads a run that is not in the database yet. The
    message's id is chosen here and recorded in the same transaction
    (run.celery_task_id), so a cancel can revoke it whether it waits or runs.
    `countdown`: seconds before it may run (a retry's back-off)."""
    stage = run.stage or STAGES[run.kind][0]
    task_id = str(uuid.uuid4())
    stage_record_discard(run, stage, "send_failed_at")
    # When its message was sent: the sweep asks the broker about a message
    # only once it has had time to arrive (training_runs_requeue_stale).
    stage_record_update(run, stage, queued_at=timezone.now().isoformat())
    fields = {"stage": stage, "celery_task_id": task_id, "stages": run.stages}
    TrainingRun.objects.filter(pk=run.pk).update(**fields)
    run.stage, run.celery_task_id = stage, task_id
    transaction.on_commit(partial(stage_send, run_id=run.pk, stage=stage, task_id=task_id, countdown=countdown))


def stage_send(*, run_id: int, stage: str, task_id: str, countdown: float | None) -> None:
    """Send a stage's message; called after the commit, so it must not raise:
    the run is in the database already and the caller (a web request, or the
    stage before it) has done its part. A message the broker refused is
    marked on the stage, and training_runs_requeue_stale sends it again."""
    task = task_named(STAGE_TASK)  # outside the try: a wrong name is a bug to see, not a broker to wait for
    try:
        task.apply_async(kwargs={"run_id": run_id, "stage": stage}, task_id=task_id, countdown=countdown)
    except Exception as exc:  # kombu's OperationalError and whatever the transport raises
        log.warning("run %s: could not queue %s (%s: %s); the beat sweep will send it", run_id, stage, type(exc).__name__, exc)
        try:
            with transaction.atomic():
                run = TrainingRun.objects.select_for_update().filter(pk=run_id, celery_task_id=task_id).first()
                if run is not None:
                    stage_record_update(run, stage, send_failed_at=timezone.now().isoformat())
                    run.save(update_fields=["stages"])
        except Exception:
            log.exception("run %s: could not record that %s was not queued", run_id, stage)


def stage_revoke(*, run_id: int, task_ids: list[str]) -> None:
    """Revoke the stage's messages: a waiting one is dropped, and the process
    running one is terminated, which stops a stage in a long step that never
    reports (loading a model, one big generation batch) where the Reporter's
    check cannot. Safe: the run is already cancelled in the database, so a
    redelivered message is a no-op; what the killed process left in the
    store's temp folders is swept (store_leftovers_sweep). Best effort: with
    the broker down, the Reporter still stops the stage at its next report."""
    try:
        app.control.revoke(task_ids, terminate=True, signal="SIGTERM")
    except Exception as exc:
        log.warning("run %s: could not revoke %s (%s: %s)", run_id, task_ids, type(exc).__name__, exc)

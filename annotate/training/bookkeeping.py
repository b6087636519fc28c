"""What the gpu worker records while a stage runs (executor.py calls these):
begin, progress, metrics, heartbeat, then succeed (and queue the next stage)
or fail (and queue a retry after a back-off, or fail the run once its
attempts are spent). Each is a short transaction of its own, so what a stage
has recorded survives the worker being killed."""
import time
import traceback
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotate.models import Round, TrainingRun
from annotate.training.queue import training_run_enqueue
from annotate.training.stages import FINISHED, STAGES, StageStatus, stage_record, stage_record_update


def training_run_is_cancelled(*, run_id: int) -> bool:
    return TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.CANCELLED).exists()


def training_stage_begin(*, run_id: int, stage: str, task_id: str | None = None) -> TrainingRun | None:
    """Mark a stage running and count the attempt, committed before any work so
    that a worker killed mid-stage still counts. `task_id`: the Celery
    message running it, recorded on the stage for cancel to revoke. None:
    nothing to do."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status in FINISHED:
            return None
        record = stage_record(run, stage)
        if record.get("status") == StageStatus.SUCCEEDED:
            return None
        if run.stage != stage:
            # A stale message for a stage the run has moved past or not reached.
            return None
        if task_id and run.celery_task_id and task_id != run.celery_task_id:
            # A message a newer one replaced (sent again by the sweep because
            # this one looked lost, or redelivered after its worker died and
            # the sweep had sent a fresh one): the newer one runs the stage,
            # so two workers never run it at once.
            return None
        if record.get("attempts", 0) >= settings.TRAINING_MAX_ATTEMPTS:
            # Its worker kept dying before it could record an error (killed,
            # out of memory): stop here instead of trying forever.
            training_run_mark_failed(
                run=run,
                reason=f"{stage} was started {record['attempts']} times and never finished: "
                f"the worker was lost each time. Last error: {run.error or 'none recorded'}",
            )
            return None
        now = timezone.now()
        record = stage_record_update(
            run, stage, status=StageStatus.RUNNING, started_at=now.isoformat(), attempts=record.get("attempts", 0) + 1
        )
        if task_id:
            others = [t for t in record.get("task_ids", []) if t != task_id]
            stage_record_update(run, stage, task_id=task_id, task_ids=[*others, task_id])
        run.attempts = record["attempts"]
        run.status = TrainingRun.Status.RUNNING
        run.progress = 0.0
        run.started_at = run.started_at or now
        run.heartbeat_at = now
        run.save(update_fields=["stages", "attempts", "status", "progress", "started_at", "heartbeat_at"])
        return run


def training_stage_progress(*, run_id: int, fraction: float) -> None:
    TrainingRun.objects.filter(pk=run_id).update(progress=max(0.0, min(1.0, float(fraction))))


def training_stage_metrics(*, run_id: int, stage: str, step: int, metrics: dict) -> None:
    clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        run.metrics.update(clean)
        run.metrics_history.append({"stage": stage, "step": int(step), "t": round(time.time(), 3), **clean})
        run.save(update_fields=["metrics", "metrics_history"])


def training_stage_heartbeat(*, run_id: int) -> None:
    TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(heartbeat_at=timezone.now())


@transaction.atomic
def training_stage_succeed(*, run_id: int, stage: str, outputs: dict) -> TrainingRun:
    run = TrainingRun.objects.select_for_update().get(pk=run_id)
    if run.status == TrainingRun.Status.CANCELLED:
        # Cancelled while its last steps ran: neither advance nor enqueue.
        return run
    now = timezone.now()
    started = stage_record(run, stage).get("started_at")
    stage_record_update(
        run,
        stage,
        status=StageStatus.SUCCEEDED,
        finished_at=now.isoformat(),
        seconds=round((now - datetime.fromisoformat(started)).total_seconds(), 3) if started else None,
        outputs=outputs,
    )
    stages = STAGES[run.kind]
    position = stages.index(stage)
    run.progress = 1.0
    run.attempts = 0
    if position + 1 < len(stages):
        run.stage = stages[position + 1]
        run.status = TrainingRun.Status.QUEUED
        run.save()
        training_run_enqueue(run=run)
    else:
        run.status = TrainingRun.Status.SUCCEEDED
        run.finished_at = now
        run.save()
    return run


@transaction.atomic
def training_stage_fail(*, run_id: int, stage: str, error: BaseException) -> float | None:
    """Record a stage's error and queue its next try after a back-off.
    Returns that delay, or None when the attempts are spent and the run is
    now failed."""
    run = TrainingRun.objects.select_for_update().get(pk=run_id)
    if run.status == TrainingRun.Status.CANCELLED:
        return None  # no retry for a run nobody wants any more
    text = "".join(traceback.format_exception(error))[-8000:]
    record = stage_record_update(run, stage, status=StageStatus.ERROR, last_error=text)
    run.error = f"{stage}: {type(error).__name__}: {error}"
    if record.get("attempts", 0) < settings.TRAINING_MAX_ATTEMPTS:
        run.status = TrainingRun.Status.QUEUED
        run.save(update_fields=["stages", "error", "status"])
        delay = float(settings.TRAINING_RETRY_DELAY * 2 ** (record.get("attempts", 1) - 1))
        training_run_enqueue(run=run, countdown=delay)
        return delay
    training_run_mark_failed(run=run, reason=f"{stage} failed after {record.get('attempts')} attempts: {run.error}")
    return None


def training_run_mark_failed(*, run: TrainingRun, reason: str) -> None:
    run.status = TrainingRun.Status.FAILED
    run.error = reason
    run.finished_at = timezone.now()
    run.save()
    if run.round_id:
        Round.objects.filter(pk=run.round_id).update(status=Round.Status.FAILED)

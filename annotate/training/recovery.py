"""The beat sweeps that keep runs moving when a worker or the broker lost
their work: stages whose worker died or whose message never arrived are sent
again, and what killed stages and publishes left in the model store is
removed. Run by the default worker on beat's schedule (annotate/tasks.py)."""
import logging
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotate.models import TrainingRun
from annotate.training.queue import training_run_enqueue
from annotate.training.stages import SCRATCH_DIR, stage_record
from config.broker import broker_holds_message
from config.celery import Queue

log = logging.getLogger(__name__)


@transaction.atomic
def training_runs_requeue_stale(*, stale_after_s: float, lost_after_s: float = 60.0) -> list[int]:
    """Queue the stage of every RUNNING run whose worker stopped beating
    again. A worker killed outright (SIGKILL, out of memory, machine lost)
    leaves its message unacknowledged in the broker, which would give it back
    only after the visibility timeout (hours). Also send again the stage of
    every QUEUED run whose message the broker refused (queue.stage_send marked
    it), or accepted and no longer holds `lost_after_s` after it was sent
    (broker_holds_message). Safe: a stage that finished in the meantime is a no-op, and the
    attempt cap still applies. Returns the run ids queued."""
    cutoff = timezone.now() - timedelta(seconds=stale_after_s)
    stale = list(
        TrainingRun.objects.select_for_update(skip_locked=True)
        .filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff)
    )
    for run in stale:
        # The new heartbeat keeps the next sweep from queueing it again while
        # the message waits for a free worker.
        run.heartbeat_at = timezone.now()
        run.save(update_fields=["heartbeat_at"])
        log.warning("run %s: %s lost its worker; queued again", run.pk, run.stage)
        training_run_enqueue(run=run)
    queued = list(TrainingRun.objects.select_for_update(skip_locked=True).filter(status=TrainingRun.Status.QUEUED))
    unsent = [run for run in queued if stage_record(run, run.stage).get("send_failed_at")]
    for run in unsent:
        log.warning("run %s: %s was never queued (broker down); queued now", run.pk, run.stage)
        training_run_enqueue(run=run)
    lost_cutoff = (timezone.now() - timedelta(seconds=lost_after_s)).isoformat()
    lost = [
        run
        for run in queued
        if run not in unsent and run.celery_task_id
        and stage_record(run, run.stage).get("queued_at", "") <= lost_cutoff
        and broker_holds_message(task_id=run.celery_task_id, queue=Queue.GPU) is False
    ]
    for run in lost:
        # The broker accepted the message and then lost it (a Redis restart
        # without persistence): nothing would ever run the stage. If the old
        # message turns up after all, training_stage_begin skips it.
        log.warning("run %s: the broker lost the message of %s; queued again", run.pk, run.stage)
        training_run_enqueue(run=run)
    return [run.pk for run in stale + unsent + lost]


def store_leftovers_sweep(*, older_than_s: float) -> list[str]:
    """Remove what killed publishes (<store>/.tmp) and killed stages (their
    scratch folders) left behind, once nothing holds them and nothing in them
    changed for `older_than_s` seconds (rlhf.store.sweep_leftovers). Returns
    the paths removed."""
    from rlhf.store import TMP_DIR, sweep_leftovers

    root = Path(settings.MODEL_STORE)
    removed = [
        path for sub in (TMP_DIR, SCRATCH_DIR) for path in sweep_leftovers(root / sub, older_than_s=older_than_s)
    ]
    for path in removed:
        log.warning("removed %s: left by a publish or stage that was killed", path)
    return removed

"""Training runs as the web process sees them: create, enqueue, record.

The stages themselves run in annotate/pipeline.py, on the gpu queue; nothing
here imports torch.
"""
import logging
import time
import traceback
import uuid
from datetime import datetime
from functools import partial
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from annotate.errors import Conflict, ValidationFailed
from annotate.models import Campaign, Round, TrainingRun

User = get_user_model()
log = logging.getLogger(__name__)

STAGES = {
    TrainingRun.Kind.BOOTSTRAP: ["import", "generate", "open"],
    TrainingRun.Kind.TRAIN: ["snapshot", "reward", "policy", "generate", "open"],
}
CONFIG_SECTIONS = ("reward", "policy", "dpo", "generate")
# A stage's working folder, inside the model store so that publishing from it
# is a rename on one filesystem (annotate/pipeline.py).
SCRATCH_DIR = ".scratch"


def training_config_validate(*, config: dict) -> dict:
    """Check the shape of a training config and each field's name and type
    against the rlhf dataclasses, so a typo is a 400 now and not a failed run
    an hour later."""
    from rlhf.configs import config_errors  # torch-free

    if not isinstance(config, dict):
        raise ValidationFailed("training_config must be an object with keys " + ", ".join(CONFIG_SECTIONS))
    errors = config_errors(config)
    if errors:
        raise ValidationFailed("training_config is invalid: " + "; ".join(errors), details=errors)
    return config


def _merged_config(campaign: Campaign, overrides: dict | None) -> dict:
    merged = {section: dict(campaign.training_config.get(section, {})) for section in CONFIG_SECTIONS}
    for section, values in (overrides or {}).items():
        merged.setdefault(section, {}).update(values)
    # The campaign's KL budget goes to both policy methods' settings, so the
    # run's stored config says what its step was held to; a run's own
    # kl_budget (campaign training_config or trigger overrides) wins.
    if campaign.kl_budget is not None:
        for section in ("policy", "dpo"):
            merged.setdefault(section, {}).setdefault("kl_budget", campaign.kl_budget)
    return merged


def training_run_enqueue(*, run: TrainingRun, countdown: float | None = None) -> None:
    """Queue the run's next stage once the surrounding transaction commits, so
    the worker never reads a run that is not in the database yet. The
    message's id is chosen here and recorded in the same transaction
    (run.celery_task_id), so a cancel can revoke it whether it waits or runs.
    `countdown`: seconds before it may run (a retry's back-off)."""
    stage = run.stage or STAGES[run.kind][0]
    task_id = str(uuid.uuid4())
    info = run.stages.setdefault(stage, {})
    info.pop("send_failed_at", None)
    # When its message was sent: the sweep asks the broker about a message
    # only once it has had time to arrive (training_runs_requeue_stale).
    info["queued_at"] = timezone.now().isoformat()
    fields = {"stage": stage, "celery_task_id": task_id, "stages": run.stages}
    TrainingRun.objects.filter(pk=run.pk).update(**fields)
    run.stage, run.celery_task_id = stage, task_id
    transaction.on_commit(partial(_stage_send, run_id=run.pk, stage=stage, task_id=task_id, countdown=countdown))


def _stage_send(*, run_id: int, stage: str, task_id: str, countdown: float | None) -> None:
    """Send a stage's message; called after the commit, so it must not raise:
    the run is in the database already and the caller (a web request, or the
    stage before it) has done its part. A message the broker refused is
    marked on the stage, and training_runs_requeue_stale sends it again."""
    from annotate.tasks import training_stage_task

    try:
        training_stage_task.apply_async(kwargs={"run_id": run_id, "stage": stage}, task_id=task_id, countdown=countdown)
    except Exception as exc:  # kombu's OperationalError and whatever the transport raises
        log.warning("run %s: could not queue %s (%s: %s); the beat sweep will send it", run_id, stage, type(exc).__name__, exc)
        try:
            with transaction.atomic():
                run = TrainingRun.objects.select_for_update().filter(pk=run_id, celery_task_id=task_id).first()
                if run is not None:
                    run.stages.setdefault(stage, {})["send_failed_at"] = timezone.now().isoformat()
                    run.save(update_fields=["stages"])
        except Exception:
            log.exception("run %s: could not record that %s was not queued", run_id, stage)


def training_method_validate(*, method: str) -> str:
    if method not in Campaign.Method.values:
        raise ValidationFailed(
            f"method must be one of {', '.join(Campaign.Method.values)}, not {method!r}",
            details={"method": f"choose one of {', '.join(Campaign.Method.values)}"},
        )
    return method


@transaction.atomic
def training_run_start(
    *, campaign: Campaign, user: User | None = None, overrides: dict | None = None, method: str | None = None
) -> TrainingRun:
    """Close the campaign's collecting round and train on everything rated so
    far. A second call for the same round returns the first run (a cancelled
    one excepted: the round is trained on afresh). `method`: how the policy
    step trains (Campaign.Method), stored as config["method"]; default the
    campaign's."""
    if method is not None:
        training_method_validate(method=method)
    if overrides:
        training_config_validate(config=overrides)
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if overrides:
        # Each part can be valid alone and wrong together (the campaign's
        # trainable_layers with an override's lora_r): a 400 now, not a failed stage.
        training_config_validate(config=_merged_config(campaign, overrides))
    round_ = campaign.rounds.order_by("-index").first()
    if round_ is None:
        raise Conflict("The campaign has no round yet: start it first (POST /api/campaigns/{id}/start/).")
    existing = (
        TrainingRun.objects.filter(round=round_, kind=TrainingRun.Kind.TRAIN)
        .exclude(status=TrainingRun.Status.CANCELLED)
        .first()
    )
    if existing is not None:
        if existing.status != TrainingRun.Status.FAILED:
            return existing
        # A failed run is started again from its failed stage, with that
        # stage's attempts counted afresh.
        existing.status = TrainingRun.Status.QUEUED
        existing.attempts = 0
        existing.stages.get(existing.stage, {})["attempts"] = 0
        existing.error = ""
        existing.finished_at = None
        existing.save(update_fields=["status", "attempts", "stages", "error", "finished_at"])
        Round.objects.filter(pk=round_.pk).update(status=Round.Status.TRAINING)
        training_run_enqueue(run=existing)
        return existing
    if round_.status != Round.Status.COLLECTING:
        raise Conflict(f"Round {round_.index} is {round_.status}; only a collecting round can be trained on.")
    from annotate.models import Rating

    if not Rating.objects.filter(comparison__round__campaign=campaign, choice__in=["A", "B"]).exists():
        raise Conflict("No ratings that prefer one side yet: there is nothing to train on.")
    round_.status = Round.Status.TRAINING
    round_.closed_at = timezone.now()
    round_.save(update_fields=["status", "closed_at"])
    run = TrainingRun.objects.create(
        campaign=campaign,
        round=round_,
        kind=TrainingRun.Kind.TRAIN,
        config={**_merged_config(campaign, overrides), "method": method or campaign.method},
        triggered_by=user,
    )
    training_run_enqueue(run=run)
    return run


FINISHED = (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED)


@transaction.atomic
def training_run_cancel(*, run: TrainingRun, user: User | None = None) -> TrainingRun:
    """Stop a queued or running run. Its queued stage message becomes a no-op
    (training_stage_begin skips cancelled runs); a running stage notices
    through its Reporter within a few seconds and stops without publishing.
    What earlier stages published (dataset snapshot, reward model) stays in
    the store, as history.

    A train run's round goes back to collecting when the run had not opened
    the next round: annotators can go on rating it, and training it again
    starts a fresh run with a fresh snapshot (the cancelled run no longer
    holds the round's one-run slot). If the next round is already open the
    work is done and the round is left as it is. A bootstrap run's campaign
    can simply be started again."""
    run = TrainingRun.objects.select_for_update().get(pk=run.pk)
    if run.status in FINISHED:
        raise Conflict(f"Run {run.pk} is {run.status} already; only a queued or running run can be cancelled.")
    now = timezone.now()
    who = user.get_username() if user is not None else "the system"
    info = run.stages.get(run.stage)
    if info is not None and info.get("status") in ("running", "error"):
        info.update(status="cancelled", finished_at=now.isoformat())
    run.status = TrainingRun.Status.CANCELLED
    run.finished_at = now
    run.error = f"cancelled by {who}"
    run.save(update_fields=["status", "finished_at", "error", "stages"])
    if run.kind == TrainingRun.Kind.TRAIN and run.round_id:
        round_ = Round.objects.select_for_update().get(pk=run.round_id)
        next_open = Round.objects.filter(campaign_id=run.campaign_id, index=round_.index + 1).exists()
        if not next_open and round_.status in (Round.Status.TRAINING, Round.Status.FAILED):
            round_.status = Round.Status.COLLECTING
            round_.closed_at = None
            round_.save(update_fields=["status", "closed_at"])
    task_ids = sorted({run.celery_task_id, *(info or {}).get("task_ids", [])} - {""})
    if task_ids:
        transaction.on_commit(partial(_revoke, run_id=run.pk, task_ids=task_ids))
    return run


def _revoke(*, run_id: int, task_ids: list[str]) -> None:
    """Revoke the stage's messages: a waiting one is dropped, and the process
    running one is terminated, which stops a stage in a long step that never
    reports (loading a model, one big generation batch) where the Reporter's
    check cannot. Safe: the run is already cancelled in the database, so a
    redelivered message is a no-op; what the killed process left in the
    store's temp folders is swept (store_leftovers_sweep). Best effort: with
    the broker down, the Reporter still stops the stage at its next report."""
    from config.celery import app

    try:
        app.control.revoke(task_ids, terminate=True, signal="SIGTERM")
    except Exception as exc:
        log.warning("run %s: could not revoke %s (%s: %s)", run_id, task_ids, type(exc).__name__, exc)


def training_run_is_cancelled(*, run_id: int) -> bool:
    return TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.CANCELLED).exists()


# --- Recording, called by the pipeline while a stage runs ----------------


def training_stage_begin(*, run_id: int, stage: str, task_id: str | None = None) -> TrainingRun | None:
    """Mark a stage running and count the attempt, committed before any work so
    that a worker killed mid-stage still counts. `task_id`: the Celery
    message running it, recorded on the stage for cancel to revoke. None:
    nothing to do."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED):
            return None
        if run.stages.get(stage, {}).get("status") == "succeeded":
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
        info = run.stages.setdefault(stage, {})
        if info.get("attempts", 0) >= settings.TRAINING_MAX_ATTEMPTS:
            # Its worker kept dying before it could record an error (killed,
            # out of memory): stop here instead of trying forever.
            training_run_mark_failed(
                run=run,
                reason=f"{stage} was started {info['attempts']} times and never finished: "
                f"the worker was lost each time. Last error: {run.error or 'none recorded'}",
            )
            return None
        now = timezone.now()
        info.update(status="running", started_at=now.isoformat(), attempts=info.get("attempts", 0) + 1)
        if task_id:
            info["task_id"] = task_id
            info["task_ids"] = [*[t for t in info.get("task_ids", []) if t != task_id], task_id]
        run.attempts = info["attempts"]
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


@transaction.atomic
def training_stage_succeed(*, run_id: int, stage: str, outputs: dict) -> TrainingRun:
    run = TrainingRun.objects.select_for_update().get(pk=run_id)
    if run.status == TrainingRun.Status.CANCELLED:
        # Cancelled while its last steps ran: neither advance nor enqueue.
        return run
    now = timezone.now()
    info = run.stages.setdefault(stage, {})
    started = info.get("started_at")
    info.update(
        status="succeeded",
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
    info = run.stages.setdefault(stage, {})
    text = "".join(traceback.format_exception(error))[-8000:]
    info.update(status="error", last_error=text)
    run.error = f"{stage}: {type(error).__name__}: {error}"
    if info.get("attempts", 0) < settings.TRAINING_MAX_ATTEMPTS:
        run.status = TrainingRun.Status.QUEUED
        run.save(update_fields=["stages", "error", "status"])
        delay = float(settings.TRAINING_RETRY_DELAY * 2 ** (info.get("attempts", 1) - 1))
        training_run_enqueue(run=run, countdown=delay)
        return delay
    training_run_mark_failed(run=run, reason=f"{stage} failed after {info.get('attempts')} attempts: {run.error}")
    return None


def training_run_mark_failed(*, run: TrainingRun, reason: str) -> None:
    run.status = TrainingRun.Status.FAILED
    run.error = reason
    run.finished_at = timezone.now()
    run.save()
    if run.round_id:
        Round.objects.filter(pk=run.round_id).update(status=Round.Status.FAILED)


def training_stage_heartbeat(*, run_id: int) -> None:
    TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(heartbeat_at=timezone.now())


@transaction.atomic
def training_runs_requeue_stale(*, stale_after_s: float, lost_after_s: float = 60.0) -> list[int]:
    """Queue the stage of every RUNNING run whose worker stopped beating
    again. A worker killed outright (SIGKILL, out of memory, machine lost)
    leaves its message unacknowledged in the broker, which would give it back
    only after the visibility timeout (hours). Also send again the stage of
    every QUEUED run whose message the broker refused (_stage_send marked
    it), or accepted and no longer holds `lost_after_s` after it was sent
    (broker_holds_message). Safe: a stage that finished in the meantime is a no-op, and the
    attempt cap still applies. Returns the run ids queued."""
    from datetime import timedelta

    from config.celery import Queue

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
    unsent = [run for run in queued if run.stages.get(run.stage, {}).get("send_failed_at")]
    for run in unsent:
        log.warning("run %s: %s was never queued (broker down); queued now", run.pk, run.stage)
        training_run_enqueue(run=run)
    lost_cutoff = (timezone.now() - timedelta(seconds=lost_after_s)).isoformat()
    lost = [
        run
        for run in queued
        if run not in unsent and run.celery_task_id
        and run.stages.get(run.stage, {}).get("queued_at", "") <= lost_cutoff
        and broker_holds_message(task_id=run.celery_task_id, queue=Queue.GPU) is False
    ]
    for run in lost:
        # The broker accepted the message and then lost it (a Redis restart
        # without persistence): nothing would ever run the stage. If the old
        # message turns up after all, training_stage_begin skips it.
        log.warning("run %s: the broker lost the message of %s; queued again", run.pk, run.stage)
        training_run_enqueue(run=run)
    return [run.pk for run in stale + unsent + lost]


def broker_holds_message(*, task_id: str, queue: str) -> bool | None:
    """Whether the broker still holds this message: waiting in the queue, or
    delivered to a worker and not yet acknowledged. None when it cannot tell
    (a broker other than Redis, or Redis unreachable): then nothing is sent
    again on its account. Reads kombu's Redis layout: a list per queue (and
    per priority step) and the `unacked` hash of delivered messages."""
    from config.celery import app

    try:
        with app.connection_for_read() as conn:
            if conn.transport.driver_type != "redis":
                return None
            channel = conn.default_channel
            client = channel.client
            for key in {channel._q_for_pri(queue, pri) for pri in channel.priority_steps}:
                if any(task_id in raw.decode(errors="replace") for raw in client.lrange(key, 0, -1)):
                    return True
            return any(task_id in raw.decode(errors="replace") for raw in client.hvals(channel.unacked_key))
    except Exception as exc:  # redis.ConnectionError, kombu's OperationalError
        log.warning("could not ask the broker about message %s (%s: %s)", task_id, type(exc).__name__, exc)
        return None


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

"""Starting and cancelling training runs: what the web process (API, console,
`manage.py train`) and the round-complete check call. Nothing here imports
torch; the stages run on the gpu worker (executor.py)."""
from functools import partial

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from annotate.errors import Conflict, ValidationFailed
from annotate.models import Campaign, Rating, Round, TrainingRun
from annotate.training.queue import stage_revoke, training_run_enqueue
from annotate.training.stages import FINISHED, StageStatus, stage_record, stage_record_update

User = get_user_model()

CONFIG_SECTIONS = ("sft", "reward", "policy", "dpo", "generate")


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


def training_method_validate(*, method: str) -> str:
    if method not in Campaign.Method.values:
        raise ValidationFailed(
            f"method must be one of {', '.join(Campaign.Method.values)}, not {method!r}",
            details={"method": f"choose one of {', '.join(Campaign.Method.values)}"},
        )
    return method


def training_sft_validate(*, sft) -> bool | None:
    """The trigger's `sft` flag: true asks for the sft stage whatever the
    campaign's schedule, false skips it this run, null follows the schedule."""
    if sft is not None and not isinstance(sft, bool):
        raise ValidationFailed(
            f"sft must be true, false or null, not {sft!r}",
            details={"sft": "true: fine-tune on new demonstrations now; false: not this run; null: the schedule"},
        )
    return sft


def _sft_plan(campaign: Campaign, sft: bool | None) -> dict:
    # Frozen into the run's config when it starts, as the method is, so the
    # run says what it was asked to do even after the campaign's settings change.
    return {"schedule": campaign.sft_schedule, "every_n": campaign.sft_every_n, "anchor": campaign.sft_anchor,
            "requested": sft}


@transaction.atomic
def training_run_start(
    *, campaign: Campaign, user: User | None = None, overrides: dict | None = None, method: str | None = None,
    sft: bool | None = None,
) -> TrainingRun:
    """Close the campaign's collecting round and train on everything rated so
    far. A second call for the same round returns the first run (a cancelled
    one excepted: the round is trained on afresh). `method`: how the policy
    step trains (Campaign.Method), stored as config["method"]; default the
    campaign's. `sft`: whether the sft stage runs (training_sft_validate),
    stored with the campaign's sft settings as config["sft_plan"]."""
    training_sft_validate(sft=sft)
    if method is not None:
        training_method_validate(method=method)
    if overrides:
        training_config_validate(config=overrides)
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.kind == Campaign.Kind.EVALUATION:
        raise Conflict(
            f"Campaign '{campaign.name}' is an evaluation campaign: it compares models and trains none "
            "(docs/evaluation.md)."
        )
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
        if existing.stage in existing.stages:
            stage_record_update(existing, existing.stage, attempts=0)
        existing.error = ""
        existing.finished_at = None
        existing.save(update_fields=["status", "attempts", "stages", "error", "finished_at"])
        Round.objects.filter(pk=round_.pk).update(status=Round.Status.TRAINING)
        training_run_enqueue(run=existing)
        return existing
    if round_.status != Round.Status.COLLECTING:
        raise Conflict(f"Round {round_.index} is {round_.status}; only a collecting round can be trained on.")
    if not Rating.objects.filter(comparison__round__campaign=campaign, choice__in=["A", "B"]).exists():
        raise Conflict("No ratings that prefer one side yet: there is nothing to train on.")
    round_.status = Round.Status.TRAINING
    round_.closed_at = timezone.now()
    round_.save(update_fields=["status", "closed_at"])
    run = TrainingRun.objects.create(
        campaign=campaign,
        round=round_,
        kind=TrainingRun.Kind.TRAIN,
        config={**_merged_config(campaign, overrides), "method": method or campaign.method,
                "sft_plan": _sft_plan(campaign, sft)},
        triggered_by=user,
    )
    training_run_enqueue(run=run)
    return run


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
    record = stage_record(run, run.stage)
    if record.get("status") in (StageStatus.RUNNING, StageStatus.ERROR):
        record = stage_record_update(run, run.stage, status=StageStatus.CANCELLED, finished_at=now.isoformat())
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
    task_ids = sorted({run.celery_task_id, *record.get("task_ids", [])} - {""})
    if task_ids:
        transaction.on_commit(partial(stage_revoke, run_id=run.pk, task_ids=task_ids))
    return run

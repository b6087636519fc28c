from django.contrib.auth import get_user_model
from django.db import transaction

from annotate.errors import Conflict, ValidationFailed
from annotate.models import Campaign, Role, TrainingRun
from annotate.services.training import training_config_validate, training_run_enqueue

User = get_user_model()


@transaction.atomic
def campaign_create(
    *,
    name: str,
    base_model: str,
    created_by: User | None = None,
    instructions: str = "",
    overlap: int = 3,
    comparisons_per_round: int = 64,
    lease_ttl_seconds: int = 600,
    training_config: dict | None = None,
    auto_train: bool = True,
) -> Campaign:
    if Campaign.objects.filter(name=name).exists():
        raise Conflict(f"A campaign named '{name}' already exists; pick another name.")
    return Campaign.objects.create(
        name=name,
        base_model=base_model,
        created_by=created_by,
        instructions=instructions,
        overlap=overlap,
        comparisons_per_round=comparisons_per_round,
        lease_ttl_seconds=lease_ttl_seconds,
        training_config=training_config_validate(config=training_config or {}),
        auto_train=auto_train,
    )


@transaction.atomic
def campaign_annotators_add(*, campaign: Campaign, usernames: list[str]) -> list[User]:
    users = list(User.objects.filter(username__in=usernames))
    missing = sorted(set(usernames) - {u.username for u in users})
    if missing:
        raise ValidationFailed(f"No such users: {', '.join(missing)}. Create them first.")
    not_annotators = [u.username for u in users if not u.groups.filter(name=Role.ANNOTATOR).exists()]
    if not_annotators:
        raise ValidationFailed(
            f"Not in the '{Role.ANNOTATOR}' group: {', '.join(not_annotators)}. Add them to it first."
        )
    campaign.annotators.add(*users)
    return users


@transaction.atomic
def campaign_start(*, campaign: Campaign, user: User | None = None) -> TrainingRun:
    """Import the base model and have it answer round 0 (a bootstrap run on
    the gpu queue). Starting twice returns the first run."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    existing = campaign.training_runs.filter(kind=TrainingRun.Kind.BOOTSTRAP).exclude(
        status=TrainingRun.Status.FAILED
    )
    if existing.exists():
        return existing.first()
    if not campaign.prompts.exists():
        raise ValidationFailed("The campaign has no prompts yet: import prompts before starting it.")
    campaign.status = Campaign.Status.ACTIVE
    campaign.save(update_fields=["status"])
    run = TrainingRun.objects.create(
        campaign=campaign,
        kind=TrainingRun.Kind.BOOTSTRAP,
        config=campaign.training_config,
        triggered_by=user,
    )
    training_run_enqueue(run=run)
    return run

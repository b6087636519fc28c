from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from annotate.errors import Conflict, NotFound, ValidationFailed
from annotate.models import Campaign, ExternalModel, Lease, Role, TrainingRun
from annotate.services.aspects import aspect_weights_validate, aspects_validate
from annotate.services.memberships import memberships_add
from annotate.training.queue import training_run_enqueue
from annotate.training.runs import training_config_validate

User = get_user_model()


# Field -> (lowest, highest) for the numbers an admin sets; the API's
# serializers and the console's forms both end up here.
NUMBER_LIMITS = {
    "overlap": (1, 50),
    # Answers per comparison: 2 = pairs; rankings of 3 or 4 (more is more
    # reading per judgement than a screen shows side by side).
    "rank_k": (2, 4),
    "comparisons_per_round": (1, 100000),
    "lease_ttl_seconds": (30, 86400),
    "gold_frequency": (0.0, 0.9),
    "gold_min_accuracy": (0.0, 1.0),
    "gold_min_count": (1, 10000),
}
FLOAT_FIELDS = {"gold_frequency", "gold_min_accuracy"}
EDITABLE_FIELDS = {
    "name", "instructions", "base_model", "training_config", "auto_train", "method", "kl_budget", "reference_model",
    "demonstrations", "demonstration_reviews", "demonstration_pairs", "sft_schedule", "sft_every_n", "sft_anchor",
    "aspects", "aspects_required", "aspect_training", "aspect_weights",
    "selection", "selection_exploration", "selection_pool", *NUMBER_LIMITS,
}
SFT_EVERY_N_MAX = 1000
# Candidate prompts per comparison: each is answered by both policies and
# scored by the reward model in the generate stage, so the pool multiplies
# that stage's work; past 16 the stage costs far more than the ratings saved.
SELECTION_POOL_MAX = 16
# Set when the campaign is made, fixed after: a loop campaign's rounds come
# from training, an evaluation campaign's from evaluation_start.
CREATE_ONLY_FIELDS = {"kind"}
KL_BUDGET_MAX = 1000.0  # nats per answer; far past anything a useful policy step does
INSTRUCTIONS_MAX_CHARS = 50000


def campaign_fields_validate(*, fields: dict, campaign: Campaign | None = None) -> dict:
    """Check campaign settings (all of them for a new campaign, the ones given
    for an edit) and return them cleaned. Every problem is reported at once,
    per field, in ValidationFailed.details, so a form can show each next to
    its field; nothing is written."""
    errors: dict[str, str] = {}
    clean: dict = {}
    known = EDITABLE_FIELDS | (CREATE_ONLY_FIELDS if campaign is None else set())
    unknown = set(fields) - known
    if unknown:
        fixed = unknown & CREATE_ONLY_FIELDS
        raise ValidationFailed(
            f"Not campaign settings: {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})."
            + (f" {', '.join(sorted(fixed))} is set when the campaign is created and fixed after." if fixed else ""),
            details={k: "fixed once the campaign exists" if k in CREATE_ONLY_FIELDS else "not a campaign setting"
                     for k in unknown},
        )
    kind = fields.get("kind", campaign.kind if campaign is not None else Campaign.Kind.LOOP)
    for key, value in fields.items():
        if key in ("name", "base_model"):
            value = str(value or "").strip()
            limit = 200 if key == "name" else 500
            if not value and key == "base_model" and kind == Campaign.Kind.EVALUATION:
                pass  # an evaluation campaign trains nothing: no base model needed
            elif not value:
                errors[key] = "required"
            elif len(value) > limit:
                errors[key] = f"at most {limit} characters (this is {len(value)})"
            elif key == "name" and Campaign.objects.filter(name=value).exclude(pk=campaign.pk if campaign else None).exists():
                errors[key] = f"a campaign named '{value}' already exists; pick another name"
            elif key == "base_model" and campaign is not None and value != campaign.base_model and campaign_is_started(campaign=campaign):
                errors[key] = "the base model is fixed once the campaign has started (round 0 was answered by it)"
        elif key == "instructions":
            value = str(value or "")
            if len(value) > INSTRUCTIONS_MAX_CHARS:
                errors[key] = f"at most {INSTRUCTIONS_MAX_CHARS} characters (this is {len(value)})"
        elif key in NUMBER_LIMITS:
            low, high = NUMBER_LIMITS[key]
            # Not `kind`: that is the campaign's kind, read by later fields.
            number = float if key in FLOAT_FIELDS else int
            try:
                if isinstance(value, bool) or value is None or (number is int and isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                value = number(value)
            except (TypeError, ValueError):
                errors[key] = "a number" if number is float else "a whole number"
                continue
            if not low <= value <= high:
                errors[key] = f"between {low} and {high}, not {value}"
        elif key in ("auto_train", "demonstration_pairs", "aspects_required"):
            if not isinstance(value, bool):
                errors[key] = "true or false"
        elif key == "demonstrations":
            if value not in Campaign.Demonstrations.values:
                errors[key] = f"one of {', '.join(Campaign.Demonstrations.values)}"
        elif key == "demonstration_reviews":
            # One reviewer, or two distinct ones (neither the author).
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or value not in (1, 2):
                errors[key] = "1 or 2 reviewers"
        elif key == "sft_schedule":
            if value not in Campaign.SFTSchedule.values:
                errors[key] = f"one of {', '.join(Campaign.SFTSchedule.values)}"
        elif key == "sft_anchor":
            if value not in Campaign.SFTAnchor.values:
                errors[key] = f"one of {', '.join(Campaign.SFTAnchor.values)}"
        elif key == "sft_every_n":
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= SFT_EVERY_N_MAX:
                errors[key] = f"a whole number of rounds between 1 and {SFT_EVERY_N_MAX}"
        elif key == "selection":
            if value not in Campaign.Selection.values:
                errors[key] = f"one of {', '.join(Campaign.Selection.values)}"
            elif value != Campaign.Selection.RANDOM and kind == Campaign.Kind.EVALUATION:
                errors[key] = "an evaluation campaign trains no reward model to choose with; selection is for loop campaigns"
        elif key == "selection_exploration":
            try:
                if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
                    raise ValueError
                value = float(value)
            except (TypeError, ValueError):
                errors[key] = "a share between 0 and 1 (0.2: a fifth of each round's picks random)"
                continue
            if not 0.0 <= value <= 1.0:  # also refuses NaN
                errors[key] = f"a share between 0 and 1, not {value}"
        elif key == "selection_pool":
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= SELECTION_POOL_MAX:
                errors[key] = f"a whole number of candidate prompts per comparison between 1 and {SELECTION_POOL_MAX}"
        elif key == "kl_budget":
            # Optional: empty (a form's blank field) or null means no budget.
            if value is None or (isinstance(value, str) and not value.strip()):
                value = None
            else:
                try:
                    if isinstance(value, bool):
                        raise ValueError
                    value = float(value)
                except (TypeError, ValueError):
                    errors[key] = "a number of nats, or empty for no budget"
                    continue
                if not (0.0 < value <= KL_BUDGET_MAX):  # also refuses NaN
                    errors[key] = f"more than 0 and at most {KL_BUDGET_MAX:g} nats, not {value}"
        elif key == "method":
            if value not in Campaign.Method.values:
                errors[key] = f"one of {', '.join(Campaign.Method.values)}"
        elif key == "kind":
            if value not in Campaign.Kind.values:
                errors[key] = f"one of {', '.join(Campaign.Kind.values)}"
        elif key == "reference_model":
            value, problem = _reference_model(value, campaign=campaign, kind=kind)
            if problem:
                errors[key] = problem
        elif key == "aspects":
            value, problem = aspects_validate(value)
            if problem:
                errors[key] = problem
        elif key == "aspect_training":
            if value not in Campaign.AspectTraining.values:
                errors[key] = f"one of {', '.join(Campaign.AspectTraining.values)}"
        elif key == "training_config":
            if value is None:
                value = {}
            try:
                value = training_config_validate(config=value)
            except ValidationFailed as exc:
                errors[key] = exc.message
        clean[key] = value
    _aspect_settings_check(fields=fields, clean=clean, errors=errors, campaign=campaign)
    if errors:
        summary = "; ".join(f"{k}: {v}" for k, v in errors.items())
        raise ValidationFailed(f"Campaign settings are invalid: {summary}.", details=errors)
    return clean


def _aspect_settings_check(*, fields: dict, clean: dict, errors: dict, campaign: Campaign | None) -> None:
    """The aspect settings that depend on each other, as they will be once
    saved: the weights name the campaign's aspects; heads need aspects."""
    if "aspects" in errors:
        return
    aspects = clean["aspects"] if "aspects" in clean else (campaign.aspects if campaign is not None else [])
    names = [a["name"] for a in aspects]
    if "aspect_weights" in fields or ("aspects" in fields and campaign is not None and campaign.aspect_weights):
        weights = clean.get("aspect_weights", campaign.aspect_weights if campaign is not None else {})
        weights, problem = aspect_weights_validate(weights, aspect_names=names)
        if problem:
            errors["aspect_weights"] = problem
        else:
            clean["aspect_weights"] = weights
    training = clean.get("aspect_training", campaign.aspect_training if campaign is not None else "overall")
    if training == Campaign.AspectTraining.HEADS and not aspects and "aspect_training" not in errors:
        errors["aspect_training"] = "heads needs aspects: define the campaign's aspects first"


def _reference_model(value, *, campaign: Campaign | None, kind: str) -> tuple[ExternalModel | None, str]:
    """(the external model, problem): empty or null clears the reference;
    anything else must name (by id) an external model of this campaign."""
    if value is None or value == "":
        return None, ""
    if kind == Campaign.Kind.EVALUATION:
        return None, "an evaluation campaign compares all its models with each other; a reference is for loop campaigns"
    if campaign is None:
        return None, "a new campaign has no models yet: set the reference once one is added"
    if isinstance(value, ExternalModel):
        value = value.pk
    try:
        if isinstance(value, bool):
            raise ValueError
        pk = int(value)
    except (TypeError, ValueError):
        return None, f"the id of one of this campaign's external models, not {value!r}"
    model = ExternalModel.objects.filter(pk=pk, campaign=campaign).first()
    if model is None:
        names = ", ".join(f"{m.pk} ({m.name})" for m in campaign.external_models.order_by("pk")[:20])
        return None, f"campaign '{campaign.name}' has no external model {pk}; its external models: {names or 'none yet'}"
    return model, ""


def campaign_is_started(*, campaign: Campaign) -> bool:
    """Started: out of draft, a bootstrap run was queued (the base model is
    imported from then on), or (evaluation) round 0 was opened."""
    return campaign.status != Campaign.Status.DRAFT or campaign.training_runs.exists() or campaign.rounds.exists()


@transaction.atomic
def campaign_create(
    *,
    name: str,
    base_model: str = "",
    kind: str = Campaign.Kind.LOOP,
    created_by: User | None = None,
    instructions: str = "",
    overlap: int = 3,
    rank_k: int = 2,
    comparisons_per_round: int = 64,
    lease_ttl_seconds: int = 600,
    training_config: dict | None = None,
    auto_train: bool = True,
    method: str = Campaign.Method.RLOO,
    kl_budget: float | None = None,
    gold_frequency: float = 0.1,
    gold_min_accuracy: float = 0.6,
    gold_min_count: int = 5,
    demonstrations: str = Campaign.Demonstrations.OFF,
    demonstration_reviews: int = 1,
    demonstration_pairs: bool = False,
    sft_schedule: str = Campaign.SFTSchedule.EVERY_ROUND,
    sft_every_n: int = 2,
    sft_anchor: str = Campaign.SFTAnchor.BASE,
    aspects: list | None = None,
    aspects_required: bool = False,
    aspect_training: str = Campaign.AspectTraining.OVERALL,
    aspect_weights: dict | None = None,
    selection: str = Campaign.Selection.RANDOM,
    selection_exploration: float = 0.2,
    selection_pool: int = 2,
) -> Campaign:
    if Campaign.objects.filter(name=name).exists():
        raise Conflict(f"A campaign named '{name}' already exists; pick another name.")
    fields = campaign_fields_validate(
        fields=dict(
            name=name, base_model=base_model, kind=kind, instructions=instructions, overlap=overlap, rank_k=rank_k,
            comparisons_per_round=comparisons_per_round, lease_ttl_seconds=lease_ttl_seconds,
            training_config=training_config or {}, auto_train=auto_train, method=method, kl_budget=kl_budget,
            gold_frequency=gold_frequency,
            gold_min_accuracy=gold_min_accuracy, gold_min_count=gold_min_count,
            demonstrations=demonstrations, demonstration_reviews=demonstration_reviews,
            demonstration_pairs=demonstration_pairs, sft_schedule=sft_schedule, sft_every_n=sft_every_n,
            sft_anchor=sft_anchor, aspects=aspects or [], aspects_required=aspects_required,
            aspect_training=aspect_training, aspect_weights=aspect_weights or {},
            selection=selection, selection_exploration=selection_exploration, selection_pool=selection_pool,
        )
    )
    campaign = Campaign.objects.create(created_by=created_by, **fields)
    if created_by is not None:
        # The creator manages what they made; staff add others (campaign_admins_add).
        campaign.admins.add(created_by)
    return campaign


@transaction.atomic
def campaign_admins_add(*, campaign: Campaign, usernames: list[str]) -> list[User]:
    """Make these users admins of the campaign, giving each the campaign_admin
    role if they lack it. Any unknown username: nobody is added, and the
    error names them. Adding an admin again changes nothing."""
    wanted = sorted({u.strip() for u in usernames if u.strip()})
    if not wanted:
        raise ValidationFailed("Name at least one user to make a campaign admin.", details={"usernames": "empty"})
    users = list(User.objects.filter(username__in=wanted))
    missing = sorted(set(wanted) - {u.username for u in users})
    if missing:
        raise ValidationFailed(
            f"No user named {', '.join(repr(m) for m in missing)}; create the account first "
            "(manage.py ratchet_user NAME --password ... --role campaign_admin).",
            details={"usernames": f"unknown: {', '.join(missing)}"},
        )
    group, _ = Group.objects.get_or_create(name=Role.CAMPAIGN_ADMIN)
    group.user_set.add(*users)
    campaign.admins.add(*users)
    return users


@transaction.atomic
def campaign_admin_remove(*, campaign: Campaign, username: str) -> None:
    """Take one admin off the campaign. They keep the campaign_admin role and
    their other campaigns; this campaign is then a 404 to them."""
    user = campaign.admins.filter(username=username).first()
    if user is None:
        raise NotFound(f"'{username}' is not an admin of campaign '{campaign.name}'.")
    campaign.admins.remove(user)


@transaction.atomic
def campaign_update(*, campaign: Campaign, fields: dict) -> Campaign:
    """Change some of a campaign's settings. The base model is fixed once the
    campaign has started; a new overlap or lease TTL applies to leases given
    from now on. Any invalid field: nothing changes."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status == Campaign.Status.ARCHIVED:
        raise Conflict(f"Campaign '{campaign.name}' is archived; its settings no longer change.")
    clean = campaign_fields_validate(fields=fields, campaign=campaign)
    for key, value in clean.items():
        setattr(campaign, key, value)
    if clean:
        campaign.save(update_fields=list(clean))
    return campaign


@transaction.atomic
def campaign_pause(*, campaign: Campaign) -> Campaign:
    """Stop giving out work. Leases already held run out on their own, and a
    rating of one still counts, so nothing an annotator has on screen is lost."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status != Campaign.Status.ACTIVE:
        raise Conflict(f"Only an active campaign can be paused; '{campaign.name}' is {campaign.status}.")
    campaign.status = Campaign.Status.PAUSED
    campaign.save(update_fields=["status"])
    return campaign


@transaction.atomic
def campaign_resume(*, campaign: Campaign) -> Campaign:
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status != Campaign.Status.PAUSED:
        raise Conflict(f"Only a paused campaign can be resumed; '{campaign.name}' is {campaign.status}.")
    campaign.status = Campaign.Status.ACTIVE
    campaign.save(update_fields=["status"])
    return campaign


@transaction.atomic
def campaign_archive(*, campaign: Campaign) -> Campaign:
    """Close the campaign for good: no more work, its live leases released, its
    data (ratings, models, exports) kept and still readable."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.status == Campaign.Status.ARCHIVED:
        return campaign
    campaign.status = Campaign.Status.ARCHIVED
    campaign.save(update_fields=["status"])
    Lease.objects.filter(comparison__round__campaign=campaign, status=Lease.Status.LEASED).update(
        status=Lease.Status.RELEASED
    )
    return campaign


def campaign_annotators_add(*, campaign: Campaign, usernames: list[str]) -> list[User]:
    """Put annotators in the pool (see memberships_add); returns the users."""
    return [m.annotator for m in memberships_add(campaign=campaign, usernames=usernames)]


@transaction.atomic
def campaign_start(*, campaign: Campaign, user: User | None = None) -> TrainingRun:
    """Import the base model and have it answer round 0 (a bootstrap run on
    the gpu queue). Starting twice returns the first run."""
    campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if campaign.kind == Campaign.Kind.EVALUATION:
        raise Conflict(
            f"Campaign '{campaign.name}' is an evaluation campaign: it starts with evaluation_start "
            "(annotate/services/evaluation.py), which trains nothing."
        )
    existing = campaign.training_runs.filter(kind=TrainingRun.Kind.BOOTSTRAP).exclude(
        status__in=[TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED]
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

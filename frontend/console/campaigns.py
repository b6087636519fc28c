"""Console pages for campaigns (the annotator pool's are in pool.py). Thin
views: parse the form, call one service, render; validation errors come back per field from
the service (ValidationFailed.details) and are shown next to each field.

Campaign admins (and staff) may change things; ML engineers may look, and
(as in the API) start a campaign and train. The overview's figures come from
annotate/selectors/overview.py."""
import json

from django.contrib import messages
from django.http import HttpResponseForbidden
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from annotate.errors import ServiceError, ValidationFailed
from annotate.models import Campaign
from annotate.selectors.access import campaigns_readable_by
from annotate.selectors.console import campaign_console_rows
from annotate.selectors.overview import campaign_overview, campaign_overview_now
from annotate.selectors.store import base_model_choices
from annotate.services.campaigns import (
    campaign_archive,
    campaign_create,
    campaign_fields_validate,
    campaign_is_started,
    campaign_pause,
    campaign_resume,
    campaign_start,
    campaign_update,
)
from annotate.services.demo import DEMO_TRAINING
from annotate.services.evaluation import evaluation_comparisons_add, evaluation_start
from annotate.training.runs import training_run_start
from frontend.console.access import admin_view, console_view, form_errors as _errors

# Form fields of a campaign, in the order the form shows them.
CAMPAIGN_FIELDS = [
    "name", "instructions", "overlap", "rank_k", "comparisons_per_round", "lease_ttl_seconds", "gold_frequency",
    "gold_min_accuracy", "gold_min_count", "base_model", "method", "kl_budget", "training_config", "auto_train",
    "reference_model", "demonstrations", "demonstration_reviews", "demonstration_pairs", "sft_schedule", "sft_every_n",
    "sft_anchor", "aspects", "aspects_required", "aspect_training", "aspect_weights", "selection", "selection_exploration",
    "selection_pool",
]
ASPECT_FIELDS = ("aspects", "aspects_required", "aspect_training", "aspect_weights")
# What only a loop campaign has: an evaluation campaign's form shows and sends none of them.
LOOP_FIELDS = {"base_model", "method", "kl_budget", "training_config", "auto_train", "reference_model", "sft_schedule",
               "sft_every_n", "sft_anchor", "aspect_training",
               "selection", "selection_exploration", "selection_pool"}
NEW_CAMPAIGN_DEFAULTS = {
    "overlap": 3, "rank_k": 2, "comparisons_per_round": 64, "lease_ttl_seconds": 600, "gold_frequency": 0.1,
    "gold_min_accuracy": 0.6, "gold_min_count": 5, "training_config": "{}", "auto_train": True,
    "method": Campaign.Method.RLOO, "kl_budget": "", "kind": Campaign.Kind.LOOP,
    "demonstrations": Campaign.Demonstrations.OFF, "demonstration_reviews": 1, "demonstration_pairs": False,
    "sft_schedule": Campaign.SFTSchedule.EVERY_ROUND, "sft_every_n": 2, "sft_anchor": Campaign.SFTAnchor.BASE,
    "aspects": "", "aspects_required": False, "aspect_training": Campaign.AspectTraining.OVERALL, "aspect_weights": "",
    "selection": Campaign.Selection.RANDOM, "selection_exploration": 0.2, "selection_pool": 2,
}


def aspects_from_lines(text: str) -> tuple[list, str]:
    """The form's aspects, one a line as `name | key | question`, as the
    service's list (which checks them), or a problem with a line's shape."""
    aspects = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        if len(parts) != 3:
            return [], f"line {number}: write name | key | question, e.g. correctness | c | Which answer is more correct?"
        aspects.append({"name": parts[0], "key": parts[1], "question": parts[2]})
    return aspects, ""


def aspects_to_lines(aspects: list) -> str:
    return "\n".join(f"{a['name']} | {a['key']} | {a['question']}" for a in aspects)






def _campaign_form_fields(post, *, include_base_model: bool, kind: str) -> tuple[dict, dict]:
    """(fields for the service, errors the form itself finds: bad JSON).
    A new campaign has no reference model yet; an evaluation campaign none
    of the loop's fields."""
    fields, errors = {}, {}
    for key in CAMPAIGN_FIELDS:
        if kind == Campaign.Kind.EVALUATION and key in LOOP_FIELDS:
            continue
        if key in ("reference_model", "demonstrations", "demonstration_reviews", "sft_schedule", "sft_every_n",
                   "sft_anchor", "selection", "selection_exploration", "selection_pool", "rank_k") and key not in post:
            continue  # a form without the field (a new campaign has no models yet)
        if key in ASPECT_FIELDS and "aspects" not in post:
            continue  # a form without the aspect settings
        if key in ("auto_train", "demonstration_pairs", "aspects_required"):
            fields[key] = post.get(key) == "on"
        elif key == "aspects":
            fields[key], problem = aspects_from_lines(post.get(key, ""))
            if problem:
                errors[key] = problem
        elif key == "aspect_weights":
            text = post.get(key, "").strip() or "{}"
            try:
                fields[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                errors[key] = f'not valid JSON ({exc.msg}); write e.g. {{"overall": 1, "correctness": 0.5}}'

        elif key == "base_model" and not include_base_model:
            continue
        elif key == "method" and not post.get(key):
            continue  # not sent: the campaign keeps (or gets the default) method
        elif key == "training_config":
            text = post.get(key, "").strip() or "{}"
            try:
                fields[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                errors[key] = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        else:
            fields[key] = post.get(key, "")
    return fields, errors


def _all_errors(fields: dict, form_errors: dict, campaign: Campaign | None = None) -> dict:
    """With a field the form could not read (bad JSON), still check the
    others, so that every problem shows at once."""
    if not form_errors:
        return {}
    try:
        campaign_fields_validate(fields=fields, campaign=campaign)
    except ServiceError as exc:
        return {**_errors(exc), **form_errors}
    return form_errors


def _form_values(post) -> dict:
    values = {key: post.get(key, "") for key in CAMPAIGN_FIELDS}
    values["auto_train"] = post.get("auto_train") == "on"
    values["demonstration_pairs"] = post.get("demonstration_pairs") == "on"
    values["aspects_required"] = post.get("aspects_required") == "on"
    values["kind"] = post.get("kind", Campaign.Kind.LOOP)
    return values


def _campaign_values(campaign: Campaign) -> dict:
    values = {key: getattr(campaign, key) for key in CAMPAIGN_FIELDS}
    values["training_config"] = json.dumps(campaign.training_config, indent=2)
    values["kl_budget"] = "" if campaign.kl_budget is None else campaign.kl_budget
    values["reference_model"] = campaign.reference_model_id or ""
    values["aspects"] = aspects_to_lines(campaign.aspects)
    values["aspect_weights"] = json.dumps(campaign.aspect_weights) if campaign.aspect_weights else ""
    values["kind"] = campaign.kind
    return values


# --- campaigns ---------------------------------------------------------------------


@console_view()
def campaign_list(request):
    campaigns = campaigns_readable_by(user=request.user, roles=request.roles)
    return render(request, "frontend/console/index.html", {"rows": campaign_console_rows(campaigns=campaigns)})


@admin_view
@require_http_methods(["GET", "POST"])
def campaign_new(request):
    values, errors = dict(NEW_CAMPAIGN_DEFAULTS), {}
    if request.method == "POST":
        values = _form_values(request.POST)
        kind = request.POST.get("kind") or Campaign.Kind.LOOP
        fields, errors = _campaign_form_fields(request.POST, include_base_model=True, kind=kind)
        fields.pop("reference_model", None)
        fields["kind"] = kind
        errors = _all_errors(fields, errors)
        if not errors:
            try:
                campaign = campaign_create(created_by=request.user, **fields)
            except ServiceError as exc:
                errors = _errors(exc, "name")
            else:
                messages.success(request, f"Campaign '{campaign.name}' created.")
                return redirect(f"/console/campaigns/{campaign.pk}/")
    return render(
        request, "frontend/console/campaign_form.html",
        {"values": values, "errors": errors, "new": True, "base_model_locked": False,
         "methods": Campaign.Method.choices, "kinds": Campaign.Kind.choices, **_form_help(request)},
        status=400 if errors else 200,
    )


def _form_help(request, *, locked: bool = False) -> dict:
    """What the settings form offers besides the fields: the models already
    in the store as base-model choices (not once the base model is fixed),
    and training settings that suit a CPU (the demo's)."""
    return {
        "base_models": [] if locked else base_model_choices(user=request.user, roles=request.roles),
        "cpu_training": json.dumps(DEMO_TRAINING, indent=2),
    }


@admin_view
@require_http_methods(["GET", "POST"])
def campaign_detail(request, campaign_id: int):
    """Overview (round progress, recent training runs) and the settings form."""
    campaign = request.campaign
    locked = campaign_is_started(campaign=campaign)
    values, errors = _campaign_values(campaign), {}
    if request.method == "POST":
        values = _form_values(request.POST)
        values["base_model"] = values["base_model"] if not locked else campaign.base_model
        values["kind"] = campaign.kind
        fields, errors = _campaign_form_fields(request.POST, include_base_model=not locked, kind=campaign.kind)
        errors = _all_errors(fields, errors, campaign=campaign)
        if not errors:
            try:
                campaign_update(campaign=campaign, fields=fields)
            except ServiceError as exc:
                errors = _errors(exc)
            else:
                messages.success(request, "Settings saved.")
                return redirect(f"/console/campaigns/{campaign.pk}/")
    return _overview(request, campaign, values=values, errors=errors, locked=locked, status=400 if errors else 200)


def _overview(request, campaign: Campaign, *, values: dict, errors: dict, locked: bool, status: int):
    overview = campaign_overview(campaign=campaign)
    evaluation_error = errors.pop("evaluation", None)
    context = {
        "campaign": campaign,
        "values": values,
        "errors": errors,
        "evaluation_error": evaluation_error,
        "new": False,
        "base_model_locked": locked,
        "methods": Campaign.Method.choices,
        "overview": overview,
        "now": overview["now"],
        "buttons": _buttons(request, campaign, overview),
        # Settings unfolded while there is nothing else to look at, or a field to fix.
        "settings_open": bool(errors) or not locked,
        "runs": overview["recent_runs"],
        # The reference model's choices (loop), the models compared (evaluation).
        "external_models": overview["external_models"],
        **_form_help(request, locked=locked),
    }
    return render(request, "frontend/console/campaign_overview.html", context, status=status)


def _buttons(request, campaign: Campaign, overview: dict) -> dict:
    """Which of Start, Pause, Resume, Train now this user sees: those the
    campaign's state allows and their role may press (the views that take
    the POSTs check the same roles)."""
    now, loop = overview["now"], campaign.kind == Campaign.Kind.LOOP
    open_for_work = campaign.status != Campaign.Status.ARCHIVED
    live = now["run"] is not None
    current = now["round"]
    return {
        "start": loop and open_for_work and current is None and not live and (request.can_edit or request.can_train),
        "pause": request.can_edit and campaign.status == Campaign.Status.ACTIVE,
        "resume": request.can_edit and campaign.status == Campaign.Status.PAUSED,
        "archive": request.can_edit and open_for_work,
        "train": loop and open_for_work and request.can_train and not live and current is not None
        and current["status"] in ("collecting", "failed"),
    }


@console_view()
@require_http_methods(["GET"])
def campaign_now(request, campaign_id: int):
    """The overview's "now" panel alone, which the page fetches every few seconds."""
    now = campaign_overview_now(campaign=request.campaign)
    return render(request, "frontend/console/_overview_now.html", {"campaign": request.campaign, "now": now})


@console_view()
@require_POST
def campaign_run_action(request, campaign_id: int, action: str):
    """Start (a loop campaign: the base model answers round 0) and Train now.
    Who may press them, as in the API: start, the campaign's admins and ML
    engineers; train, ML engineers."""
    campaign = request.campaign
    allowed = {"start": request.can_edit or request.can_train, "train": request.can_train}[action]
    if not allowed:
        return HttpResponseForbidden(
            "Only ML engineers can train." if action == "train"
            else "Only this campaign's admins and ML engineers can start it."
        )
    try:
        if action == "start":
            run = campaign_start(campaign=campaign, user=request.user)
            messages.success(request, f"Starting: run {run.pk} imports the base model and has it answer round 0.")
        else:
            run = training_run_start(campaign=campaign, user=request.user)
            messages.success(request, f"Training: run {run.pk} is {run.status}.")
    except ServiceError as exc:
        messages.error(request, exc.message)
    return redirect(f"/console/campaigns/{campaign.pk}/")


@admin_view
@require_POST
def evaluation_action(request, campaign_id: int):
    """An evaluation campaign's overview buttons: start (round 0), or add
    `count` comparisons to its round."""
    campaign = request.campaign
    action = request.POST.get("action")
    try:
        if action == "start":
            round_, added = evaluation_start(campaign=campaign)
            message = f"Round {round_.index} is open with {added} comparisons."
        elif action == "add":
            count = request.POST.get("count", "").strip()
            if not count.isdigit():
                raise ValidationFailed(f"count must be a whole number of comparisons, not {count!r}.")
            round_, added = evaluation_comparisons_add(campaign=campaign, count=int(count))
            message = f"Added {added} comparisons to round {round_.index}."
        else:
            return HttpResponseForbidden(f"Unknown action {action!r}.")
    except ServiceError as exc:
        return _overview(
            request, campaign, values=_campaign_values(campaign), errors={"evaluation": exc.message},
            locked=campaign_is_started(campaign=campaign), status=exc.status_code,
        )
    messages.success(request, message)
    return redirect(f"/console/campaigns/{campaign.pk}/")


CAMPAIGN_ACTIONS = {"pause": campaign_pause, "resume": campaign_resume, "archive": campaign_archive}


@admin_view
@require_POST
def campaign_action(request, campaign_id, action: str):
    campaign = request.campaign
    service = CAMPAIGN_ACTIONS.get(action)
    if service is None:
        return HttpResponseForbidden(f"Unknown action {action!r}.")
    try:
        service(campaign=campaign)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, {"pause": "Campaign paused: no new work is given out.",
                                   "resume": "Campaign resumed.", "archive": "Campaign archived."}[action])
    return redirect(f"/console/campaigns/{campaign.pk}/")


# --- annotator pool ------------------------------------------------------------------

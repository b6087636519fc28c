"""Console pages for ML engineers: a campaign's training runs with a "Train
now" form, one run live (progress per stage, metric curves, config, logs,
Cancel), two runs compared, the lineage of model versions with downloads,
and two policy versions' answers side by side. Thin views: read the form, call one service
or selector, render. Campaign admins may look; only ML engineers trigger or
cancel (as in the API)."""
import json

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotate.errors import ServiceError
from annotate.models import Campaign, Role, TrainingRun
from annotate.selectors.run_page import duration_label, metric_layout, run_timeline, runs_compared, stage_eta_s
from annotate.selectors.training import (
    campaign_lineage,
    policy_versions_compared,
    training_runs_for,
    training_runs_readable_by,
)
from annotate.training.runs import training_run_cancel, training_run_start
from annotate.training.stages import FINISHED, STAGES
from frontend.console.access import console_view

PAGE_SIZE = 50
COMPARE_PAGE_SIZE = 20
# A run page offers the campaign's latest runs to compare with, not all of them.
COMPARE_RUNS = 30
training_view = console_view(post_role=Role.ML_ENGINEER, post_refusal="Only ML engineers can start or cancel training.")


def _runs_readable(request):
    """Runs of the campaigns this user may read: another campaign's run is a
    404 to a campaign admin, as a missing one is."""
    return training_runs_readable_by(user=request.user, roles=request.roles)


def stage_bars(run: TrainingRun) -> list[dict]:
    """One bar per stage of the run's kind: done, the current one at the
    run's progress, or not reached."""
    bars = []
    for name in STAGES[run.kind]:
        info = run.stages.get(name, {})
        status = info.get("status") or "pending"
        if status == "succeeded":
            fraction = 1.0
        elif name == run.stage and run.status not in FINISHED:
            fraction = run.progress
        else:
            fraction = 0.0
        eta = stage_eta_s(run, name) if status == "running" else None
        # A stage that had nothing to do (sft without new demonstrations) succeeded; its label says it skipped.
        outputs = info.get("outputs") or {}
        skipped = status == "succeeded" and outputs.get("skipped") is True
        bars.append({"name": name, "status": status, "fraction": fraction, "percent": round(100 * fraction),
                     "label": "skipped" if skipped else status, "reason": outputs.get("reason", "") if skipped else "",
                     "eta_s": round(eta) if eta is not None else None,
                     "eta_label": duration_label(eta) if eta is not None else ""})
    return bars


@training_view
def runs(request, campaign_id: int):
    campaign = request.campaign
    form = {"method": campaign.method, "config": "{}", "sft": ""}
    error = None
    if request.method == "POST":
        form = {"method": request.POST.get("method", ""), "config": request.POST.get("config", "").strip() or "{}",
                "sft": request.POST.get("sft", "")}
        # "" follows the campaign's sft_schedule; anything else but on/off reaches the service and is refused.
        sft = {"": None, "on": True, "off": False}.get(form["sft"], form["sft"])
        try:
            overrides = json.loads(form["config"])
        except json.JSONDecodeError as exc:
            error = f"Settings are not valid JSON: {exc}"
        else:
            try:
                run = training_run_start(campaign=campaign, user=request.user, overrides=overrides, method=form["method"],
                                         sft=sft)
            except ServiceError as exc:
                error = exc.message
            else:
                messages.success(request, f"Run {run.pk} is {run.status}.")
                return redirect("console-run", run_id=run.pk)
    # The list shows no metrics: a run's history alone can be megabytes.
    runs_listed = training_runs_for(campaign=campaign).select_related("round").defer("metrics_history", "metrics")
    page = Paginator(runs_listed, PAGE_SIZE).get_page(request.GET.get("page"))
    for run in page:
        run.bars = stage_bars(run)
    return render(
        request,
        "frontend/console/runs.html",
        {"campaign": campaign, "page": page, "form": form, "error": error, "methods": Campaign.Method.choices},
        status=400 if error else 200,
    )


def _compare_error(*, labels: list, found: list, versions: list[int]) -> str | None:
    """Why the page compares nothing, naming the versions that exist; None
    where nothing was asked and there is no pair yet (the page says so)."""
    existing = ", ".join(f"v{v}" for v in versions)
    if not versions:
        return None if labels == [None, None] else "This campaign has no policy version yet."
    if labels == [None, None]:
        return None
    unknown = [label for label, version in zip(labels, found) if label is not None and version is None]
    named = [f"v{label.strip().lstrip('v')}" if label.strip().lstrip("v").isdigit() else repr(label)
             for label in unknown]
    said = "".join(f"There is no {name} in this campaign. " for name in dict.fromkeys(named))
    return f"{said}Choose two versions of this campaign: {existing}."


@training_view
def run_detail(request, run_id: int):
    run = get_object_or_404(
        _runs_readable(request).select_related("campaign", "round", "triggered_by"), pk=run_id
    )
    stages = [{**bar, **run.stages.get(bar["name"], {})} for bar in stage_bars(run)]
    for stage in stages:
        stage["outputs_json"] = json.dumps(stage["outputs"], indent=2, sort_keys=True) if "outputs" in stage else ""
    layout = metric_layout(run.metrics_history)
    return render(
        request,
        "frontend/console/run_detail.html",
        {
            "campaign": run.campaign,
            "run": run,
            "stages": stages,
            "timeline": run_timeline(run),
            "live": run.status not in FINISHED,
            "config_json": json.dumps(run.config, indent=2, sort_keys=True),
            "layout": layout,
            "charts": {e["name"]: {"points": e["points"], "range": e["range"]}
                       for part in ("key", "other") for e in layout[part]["charts"]},
            "other_runs": training_runs_for(campaign=run.campaign).exclude(pk=run.pk).select_related("round")[:COMPARE_RUNS],
        },
    )


def _run_id(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


@training_view
def runs_compare(request):
    """Two runs side by side: each metric both reported as one chart with
    both runs' curves, and the settings whose values differ. A run the user
    may not read is a 404, as a missing one is; a missing or malformed id a
    400 page that says which."""
    ids = {side: _run_id(request.GET.get(side)) for side in ("a", "b")}
    missing = [side for side, pk in ids.items() if pk is None]
    if missing:
        return render(request, "frontend/console/runs_compare.html",
                      {"error": f"Choose two runs: {' and '.join(missing)} should be a run id "
                                f"(/console/runs/compare/?a=<id>&b=<id>).", "ids": ids}, status=400)
    readable = _runs_readable(request).select_related("campaign", "round")
    a, b = get_object_or_404(readable, pk=ids["a"]), get_object_or_404(readable, pk=ids["b"])
    compared = runs_compared(a=a, b=b)
    return render(
        request,
        "frontend/console/runs_compare.html",
        {"a": a, "b": b, "ids": ids, "campaign": a.campaign if a.campaign_id == b.campaign_id else None,
         "sides": [(a, "a", "#1a73e8"), (b, "b", "#e8710a")], **compared},
    )


@require_POST
@training_view
def run_cancel(request, run_id: int):
    run = get_object_or_404(_runs_readable(request), pk=run_id)
    try:
        training_run_cancel(run=run, user=request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Run {run.pk} cancelled.")
    return redirect("console-run", run_id=run.pk)


@training_view
def lineage(request, campaign_id: int):
    """Each policy version with where it came from: parent, run, reward model
    and the dataset snapshot it was trained on, its metrics and downloads."""
    campaign = request.campaign
    return render(
        request,
        "frontend/console/lineage.html",
        {"campaign": campaign, **campaign_lineage(campaign=campaign)},
    )


@training_view
def compare(request, campaign_id: int):
    """For the prompts both versions answered, their first answers side by
    side. Engineers see which version wrote which: this is not a rating page."""
    campaign = request.campaign
    compared = policy_versions_compared(
        campaign=campaign, a=request.GET.get("a"), b=request.GET.get("b"), page=request.GET.get("page"),
        per_page=COMPARE_PAGE_SIZE,
    )
    a, b, versions = compared["a"], compared["b"], compared["versions"]
    error = None
    if a is None or b is None:
        error = _compare_error(labels=[request.GET.get("a"), request.GET.get("b")], found=[a, b], versions=versions)
    # The dropdowns show a pair that exists: where a label names none, the latest two.
    latest = (versions[-2], versions[-1]) if len(versions) >= 2 else (versions * 2 or [None, None])
    selected = (a.version, b.version) if a and b else latest
    return render(
        request,
        "frontend/console/compare.html",
        {
            "campaign": campaign,
            **compared,
            "error": error,
            "selected_a": selected[0],
            "selected_b": selected[1],
            "extra_query": f"&a={a.version}&b={b.version}" if a and b else "",
        },
        status=400 if error else 200,
    )

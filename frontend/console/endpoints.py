"""Console pages for a campaign's endpoints (OpenAI-compatible servers): the
list with an "Add endpoint" form, one endpoint's settings (its API key
write-only: set, replace or clear, never shown), "Generate" (start a job),
and a job live (progress, tokens, failures with the server's error,
Cancel). Thin views: read the form, call one service or selector, render.
ML engineers and staff change and run endpoints; campaign admins may look
(as in the API)."""
import json

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotate.errors import ServiceError
from annotate.models import Role
from annotate.selectors.endpoints import (
    endpoints_for,
    endpoints_readable_by,
    generation_job_failures,
    generation_jobs_for,
    generation_jobs_readable_by,
)
from annotate.services.endpoints import (
    FINISHED,
    endpoint_create,
    endpoint_delete,
    endpoint_update,
    generation_job_cancel,
    generation_job_start,
)
from frontend.console.access import console_view

JOBS_SHOWN = 50
FAILURES_PAGE = 100
DEFAULT_FORM = {"name": "", "base_url": "", "model_name": "", "generation": '{"max_tokens": 256, "temperature": 0.7}',
                "max_concurrency": "4", "timeout_s": "120"}

endpoint_view = console_view(post_role=Role.ML_ENGINEER,
                             post_refusal="Only ML engineers can add, change or run endpoints.")


def _form_values(post) -> tuple[dict, dict, str | None]:
    """(the form as typed, for showing again; the values for the service;
    an error about the form itself)."""
    form = {k: post.get(k, "").strip() for k in DEFAULT_FORM}
    values = {k: form[k] for k in ("name", "base_url", "model_name")}
    try:
        values["generation"] = json.loads(form["generation"] or "{}")
    except json.JSONDecodeError as exc:
        return form, values, f"Generation settings are not valid JSON: {exc}"
    for name, kind in (("max_concurrency", int), ("timeout_s", float)):
        try:
            values[name] = kind(form[name])
        except ValueError:
            return form, values, f"{name} must be a number."
    return form, values, None


@endpoint_view
def endpoints(request, campaign_id: int):
    campaign = request.campaign
    form, error = dict(DEFAULT_FORM), None
    if request.method == "POST":
        form, values, error = _form_values(request.POST)
        if error is None:
            try:
                endpoint = endpoint_create(campaign=campaign, user=request.user,
                                           api_key=request.POST.get("api_key", ""), **values)
            except ServiceError as exc:
                error = exc.message
            else:
                messages.success(request, f"Endpoint '{endpoint.name}' saved.")
                return redirect("console-endpoints", campaign_id=campaign.pk)
    jobs = list(generation_jobs_for(campaign=campaign)[:JOBS_SHOWN])
    return render(
        request,
        "frontend/console/endpoints.html",
        {"campaign": campaign, "endpoints": endpoints_for(campaign=campaign), "jobs": jobs, "form": form,
         "error": error, "live": any(j.status not in FINISHED for j in jobs)},
        status=400 if error else 200,
    )


@endpoint_view
def endpoint_edit(request, endpoint_id: int):
    """One endpoint's settings. The key: keep it, replace it, or clear it."""
    endpoint = get_object_or_404(endpoints_readable_by(user=request.user).select_related("campaign"), pk=endpoint_id)
    form = {**{k: str(getattr(endpoint, k)) for k in DEFAULT_FORM if k != "generation"},
            "generation": json.dumps(endpoint.generation, indent=1)}
    error = None
    if request.method == "POST":
        form, changes, error = _form_values(request.POST)
        key_action = request.POST.get("key_action", "keep")
        if key_action == "replace":
            changes["api_key"] = request.POST.get("api_key", "")
            if not changes["api_key"].strip():
                error = error or "Type the new key, or choose to keep or clear it."
        elif key_action == "clear":
            changes["api_key"] = ""
        if error is None:
            try:
                endpoint = endpoint_update(endpoint=endpoint, user=request.user, changes=changes)
            except ServiceError as exc:
                error = exc.message
            else:
                messages.success(request, f"Endpoint '{endpoint.name}' saved.")
                return redirect("console-endpoint", endpoint_id=endpoint.pk)
    return render(
        request,
        "frontend/console/endpoint_edit.html",
        {"campaign": endpoint.campaign, "endpoint": endpoint, "form": form, "error": error},
        status=400 if error else 200,
    )


@require_POST
@endpoint_view
def endpoint_remove(request, endpoint_id: int):
    endpoint = get_object_or_404(endpoints_readable_by(user=request.user), pk=endpoint_id)
    try:
        endpoint_delete(endpoint=endpoint, user=request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("console-endpoint", endpoint_id=endpoint.pk)
    messages.success(request, f"Endpoint '{endpoint.name}' deleted.")
    return redirect("console-endpoints", campaign_id=endpoint.campaign_id)


@require_POST
@endpoint_view
def generation_start(request, endpoint_id: int):
    endpoint = get_object_or_404(endpoints_readable_by(user=request.user), pk=endpoint_id)
    named = request.POST.get("external_ids", "").replace(",", "\n").split()
    try:
        samples = int(request.POST.get("samples") or 1)
        job = generation_job_start(endpoint=endpoint, user=request.user, samples=samples,
                                   external_ids=named or None)
    except ValueError:
        messages.error(request, "Samples must be a whole number.")
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Job {job.pk} queued: {job.prompts_total} prompts, {job.samples} samples each.")
        return redirect("console-generation-job", job_id=job.pk)
    return redirect("console-endpoints", campaign_id=endpoint.campaign_id)


@endpoint_view
def generation_job(request, job_id: int):
    job = get_object_or_404(generation_jobs_readable_by(user=request.user).select_related("model__campaign"),
                            pk=job_id)
    failures = Paginator(generation_job_failures(job=job), FAILURES_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "frontend/console/generation_job.html",
        {"campaign": job.model.campaign, "job": job, "page": failures, "live": job.status not in FINISHED},
    )


@require_POST
@endpoint_view
def generation_job_stop(request, job_id: int):
    job = get_object_or_404(generation_jobs_readable_by(user=request.user), pk=job_id)
    try:
        generation_job_cancel(job=job, user=request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Job {job.pk} cancelled; the answers stored so far stay.")
    return redirect("console-generation-job", job_id=job.pk)

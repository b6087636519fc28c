"""Endpoints (external models of kind `endpoint`: an OpenAI-compatible server
that answers a campaign's prompts) and their generation jobs: save, change
and delete an endpoint; start and cancel a job; the beat sweep that sends
again the jobs whose worker died or whose message was lost. The job itself
runs on the `endpoints` queue (annotate/services/generation.py).

The API key is write-only: saved here, handed to the worker's client, never
returned, logged or put in a message (annotate/endpoints/__init__.py).
Who may call these: ML engineers and staff (annotate/apis/endpoints.py)."""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotate.endpoints.client import generation_errors
from annotate.endpoints.hosts import HostPolicy, HostRefused, host_policy_parse, url_check
from annotate.errors import Conflict, ValidationFailed
from annotate.models import Answer, Campaign, Comparison, ExternalModel, GenerationJob, Prompt
from config.broker import broker_holds_message
from config.celery import Queue, task_named

log = logging.getLogger(__name__)

# The task that runs a job, by name (config.celery.task_named says why).
GENERATION_TASK = "annotate.tasks.generation_job_task"  # kwargs: job_id
ACTIVE = (GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING)
FINISHED = (GenerationJob.Status.SUCCEEDED, GenerationJob.Status.FAILED, GenerationJob.Status.CANCELLED)
MAX_SAMPLES = 16
MAX_KEY_CHARS = 4096


def endpoint_host_policy() -> HostPolicy:
    """RATCHET_ENDPOINT_ALLOWED_HOSTS as a policy."""
    try:
        return host_policy_parse(settings.ENDPOINT_ALLOWED_HOSTS)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def _key_error(key: str) -> str | None:
    # Said without the key: a message naming the bad character would carry part of it.
    if len(key) > MAX_KEY_CHARS:
        return f"at most {MAX_KEY_CHARS} characters"
    if any(not ("\x21" <= c <= "\x7e") for c in key):
        return "printable ASCII without spaces (it is sent as `Authorization: Bearer <key>`)"
    return None


def _checked(values: dict, *, policy: HostPolicy) -> dict:
    """The endpoint fields in `values`, checked and normalised; ValidationFailed
    naming every bad one."""
    errors, clean = {}, {}
    if "name" in values:
        name = (values["name"] or "").strip()
        if not name or len(name) > 200:
            errors["name"] = "1 to 200 characters"
        clean["name"] = name
    if "base_url" in values:
        url = (values["base_url"] or "").strip()
        if len(url) > 500:
            errors["base_url"] = "at most 500 characters"
        else:
            try:
                clean["base_url"] = url_check(url, policy=policy)
            except HostRefused as exc:
                errors["base_url"] = str(exc)
    if "model_name" in values:
        model_name = (values["model_name"] or "").strip()
        if not model_name or len(model_name) > 200:
            errors["model_name"] = "1 to 200 characters: the `model` the server is asked for"
        clean["model_name"] = model_name
    if "generation" in values:
        generation = values["generation"] if values["generation"] is not None else {}
        errors.update({f"generation.{k}" if k != "generation" else k: v
                       for k, v in generation_errors(generation).items()})
        clean["generation"] = generation
    if "max_concurrency" in values:
        n = values["max_concurrency"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 256:
            errors["max_concurrency"] = "an integer from 1 to 256: requests in flight at once"
        clean["max_concurrency"] = n
    if "timeout_s" in values:
        t = values["timeout_s"]
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 1 <= t <= 3600:
            errors["timeout_s"] = "seconds from 1 to 3600: how long one request may take"
        clean["timeout_s"] = t
    if "api_key" in values:
        key = (values["api_key"] or "").strip()
        if (why := _key_error(key)) is not None:
            errors["api_key"] = why
        clean["api_key"] = key
    if errors:
        raise ValidationFailed("Bad endpoint: " + "; ".join(f"{k}: {v}" for k, v in errors.items()), details=errors)
    return clean


def endpoint_create(*, campaign: Campaign, user, name: str, base_url: str, model_name: str,
                    generation: dict | None = None, max_concurrency: int = 4, timeout_s: float = 120.0,
                    api_key: str = "") -> ExternalModel:
    """Save an endpoint of `campaign`. Its URL's host must be allowed now
    (RATCHET_ENDPOINT_ALLOWED_HOSTS, every address it resolves to)."""
    clean = _checked(
        dict(name=name, base_url=base_url, model_name=model_name, generation=generation,
             max_concurrency=max_concurrency, timeout_s=timeout_s, api_key=api_key),
        policy=endpoint_host_policy(),
    )
    try:
        with transaction.atomic():
            return ExternalModel.objects.create(campaign=campaign, kind=ExternalModel.Kind.ENDPOINT,
                                                created_by=user, **clean)
    except IntegrityError:
        raise Conflict(f"Campaign '{campaign.name}' already has a model named {clean['name']!r}; choose another name.",
                       details={"name": "taken in this campaign"}) from None


@transaction.atomic
def endpoint_update(*, endpoint: ExternalModel, user, changes: dict) -> ExternalModel:
    """Change some fields of an endpoint. `api_key` in `changes`: a string
    sets or replaces the key, "" or None clears it; absent, it stays. Jobs
    started from now on use the new settings; a running one keeps its own.
    The model asked (model_name) cannot change once it has answers: they
    would be credited to another model; save a new endpoint instead."""
    endpoint = ExternalModel.objects.select_for_update().get(pk=endpoint.pk)
    clean = _checked(changes, policy=endpoint_host_policy())
    if "model_name" in clean and clean["model_name"] != endpoint.model_name and endpoint.answers.exists():
        raise Conflict(
            f"Endpoint '{endpoint.name}' has answers from {endpoint.model_name!r}; a new model_name would credit them "
            "to another model. Save a new endpoint for the other model.",
            details={"model_name": "fixed once the endpoint has answers"},
        )
    for field, value in clean.items():
        setattr(endpoint, field, value)
    try:
        with transaction.atomic():
            endpoint.save(update_fields=list(clean) or None)
    except IntegrityError:
        raise Conflict(f"The campaign already has a model named {clean.get('name')!r}; choose another name.",
                       details={"name": "taken in this campaign"}) from None
    return endpoint


@transaction.atomic
def endpoint_delete(*, endpoint: ExternalModel, user) -> None:
    """Delete an endpoint and its answers and jobs. Refused while a job runs,
    and once any of its answers was put before annotators: their ratings
    would go with it."""
    endpoint = ExternalModel.objects.select_for_update().get(pk=endpoint.pk)
    if endpoint.jobs.filter(status__in=ACTIVE).exists():
        raise Conflict(f"Endpoint '{endpoint.name}' has a generation job under way; cancel it first.")
    answers = Answer.objects.filter(external_model=endpoint)
    compared = Comparison.objects.filter(response_a__in=answers).count() + Comparison.objects.filter(
        response_b__in=answers).count()
    if compared:
        raise Conflict(f"Endpoint '{endpoint.name}' has answers in {compared} comparisons; deleting it would delete "
                       "their ratings. It stays.")
    log.info("endpoint %s (%s) of campaign %s deleted by %s", endpoint.pk, endpoint.name, endpoint.campaign_id,
             getattr(user, "username", None))
    endpoint.delete()


# --- generation jobs ---------------------------------------------------------------------


def generation_job_enqueue(*, job: GenerationJob) -> None:
    """Queue the job (again) after the commit, under a fresh message id
    recorded in the same transaction: a message whose id is not the job's
    is stale and does nothing (generation.py), so a job never runs twice at once."""
    task_id = str(uuid.uuid4())
    GenerationJob.objects.filter(pk=job.pk).update(celery_task_id=task_id, status=GenerationJob.Status.QUEUED,
                                                   heartbeat_at=timezone.now())
    job.celery_task_id, job.status = task_id, GenerationJob.Status.QUEUED
    transaction.on_commit(partial(_send, job_id=job.pk, task_id=task_id))


def _send(*, job_id: int, task_id: str) -> None:
    """Called after the commit, so it must not raise; a message the broker
    refused is sent again by generation_jobs_requeue_stale."""
    task = task_named(GENERATION_TASK)
    try:
        task.apply_async(kwargs={"job_id": job_id}, task_id=task_id)
    except Exception as exc:  # kombu's OperationalError and whatever the transport raises
        log.warning("generation job %s: could not queue it (%s: %s); the beat sweep will", job_id,
                    type(exc).__name__, exc)


def generation_job_start(*, endpoint: ExternalModel, user, samples: int = 1,
                         external_ids: list[str] | None = None) -> GenerationJob:
    """Ask the endpoint for `samples` answers to each prompt of its campaign
    (or those named by `external_ids`) that it has not answered yet. One job
    at a time per endpoint, so its max_concurrency holds and nothing is
    asked twice."""
    if not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise ValidationFailed(f"samples must be an integer from 1 to {MAX_SAMPLES}",
                               details={"samples": f"1 to {MAX_SAMPLES}"})
    with transaction.atomic():
        endpoint = ExternalModel.objects.select_for_update().get(pk=endpoint.pk)
        if endpoint.kind != ExternalModel.Kind.ENDPOINT:
            raise Conflict(f"'{endpoint.name}' is a model of imported answers, not an endpoint: nothing to ask.")
        running = endpoint.jobs.filter(status__in=ACTIVE).first()
        if running is not None:
            raise Conflict(f"Job {running.pk} is {running.status} on endpoint '{endpoint.name}'; wait for it or cancel it.")
        prompts = Prompt.objects.filter(campaign_id=endpoint.campaign_id)
        prompt_ids = None
        if external_ids is not None:
            wanted = list(dict.fromkeys(external_ids))
            found = dict(prompts.filter(external_id__in=wanted).values_list("external_id", "pk"))
            missing = [e for e in wanted if e not in found]
            if missing:
                raise ValidationFailed(
                    f"{len(missing)} external_ids are no prompt of this campaign: {', '.join(map(repr, missing[:10]))}",
                    details={"external_ids": missing[:100]},
                )
            prompt_ids = sorted(found.values())
        total = len(prompt_ids) if prompt_ids is not None else prompts.count()
        if total == 0:
            raise Conflict("The campaign has no prompts yet: import prompts first.")
        job = GenerationJob.objects.create(model=endpoint, samples=samples, prompt_ids=prompt_ids,
                                           prompts_total=total, created_by=user)
        generation_job_enqueue(job=job)
    log.info("generation job %s: %s prompts x %s samples from endpoint %s", job.pk, total, samples, endpoint.pk)
    return job


@transaction.atomic
def generation_job_cancel(*, job: GenerationJob, user) -> GenerationJob:
    """Stop a queued or running job: its worker notices within a second or
    so and stops asking; the answers stored so far stay."""
    job = GenerationJob.objects.select_for_update().get(pk=job.pk)
    if job.status in FINISHED:
        raise Conflict(f"Job {job.pk} is {job.status} already; only a queued or running job can be cancelled.")
    job.status = GenerationJob.Status.CANCELLED
    job.finished_at = timezone.now()
    job.error = f"cancelled by {user.get_username() if user is not None else 'the system'}"
    job.save(update_fields=["status", "finished_at", "error"])
    return job


@transaction.atomic
def generation_jobs_requeue_stale(*, stale_after_s: float, lost_after_s: float = 60.0) -> list[int]:
    """Queue again every running job whose worker stopped beating (killed,
    out of memory, machine lost: its message would come back only after the
    broker's visibility timeout), and every queued job whose message the
    broker does not hold `lost_after_s` after it was sent. Safe: the old
    message, should it turn up, is stale (generation_job_enqueue), and a
    resumed job asks only what has no answer. Returns the job ids queued."""
    now = timezone.now()
    stale = list(GenerationJob.objects.select_for_update(skip_locked=True).filter(
        status=GenerationJob.Status.RUNNING, heartbeat_at__lt=now - timedelta(seconds=stale_after_s)))
    for job in stale:
        log.warning("generation job %s lost its worker; queued again", job.pk)
        generation_job_enqueue(job=job)
    queued = GenerationJob.objects.select_for_update(skip_locked=True).filter(
        status=GenerationJob.Status.QUEUED, heartbeat_at__lt=now - timedelta(seconds=lost_after_s))
    lost = [job for job in queued
            if broker_holds_message(task_id=job.celery_task_id, queue=Queue.ENDPOINTS) is False]
    for job in lost:
        log.warning("generation job %s: the broker does not hold its message; queued again", job.pk)
        generation_job_enqueue(job=job)
    return [job.pk for job in stale + lost]

"""Running a generation job on the `endpoints` worker: the prompts without an
answer from the endpoint are fed to annotate/endpoints/runner.py (its own
thread and event loop), and each answer is stored as it arrives, on this
thread, where Django may use the database.

Resumable, and nothing asked twice: a prompt's answer is stored the moment
it comes (one row per prompt, model and sample: a second insert of the same
answer is ignored), and a job that starts again, after a restart or a
killed worker, asks only for what has no answer yet. Progress, token usage
and a heartbeat are written about once a second; the beat sweep queues a
job again once its heartbeat stops (annotate/services/endpoints.py).

    generation_job_run(job_id=7, task_id="...")   # annotate/tasks.py generation_job_task
"""
from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotate.endpoints.client import EndpointConfig, redact
from annotate.endpoints.runner import Answered, GaveUp, Item, Requested, RetryPolicy, Runner, Stopped
from annotate.models import Answer, GenerationFailure, GenerationJob, Prompt
from annotate.services.endpoints import endpoint_host_policy, generation_job_enqueue

log = logging.getLogger(__name__)

# Prompts read from the database at a time; more are read when fewer than
# BACKLOG_PER_SLOT x max_concurrency requests are waiting.
CHUNK = 200
BACKLOG_PER_SLOT = 4
# Seconds between progress writes (and heartbeats).
FLUSH_EVERY_S = 1.0


def retry_policy() -> RetryPolicy:
    return RetryPolicy(max_attempts=settings.ENDPOINT_MAX_ATTEMPTS, backoff_s=settings.ENDPOINT_BACKOFF_S,
                       backoff_max_s=settings.ENDPOINT_BACKOFF_MAX_S,
                       unavailable_give_up_s=settings.ENDPOINT_UNAVAILABLE_GIVE_UP_S,
                       give_up_streak=settings.ENDPOINT_GIVE_UP_STREAK)


def prompt_messages(prompt: Prompt) -> list[dict]:
    """A prompt as chat messages: its turns, or its text as one user turn."""
    if prompt.turns:
        return [{"role": t["role"], "content": t["content"]} for t in prompt.turns]
    return [{"role": "user", "content": prompt.text}]


def _claim(*, job_id: int, task_id: str) -> GenerationJob | None:
    """The job, marked running for this message; None when the message is
    stale (the job was queued again since, under another id), the job is
    finished or cancelled, or another worker runs this very message (a
    redelivery while the first one still beats)."""
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().select_related("model", "model__campaign").filter(
            pk=job_id).first()
        if job is None or job.celery_task_id != task_id:
            return None
        now = timezone.now()
        # The same message again after its worker process died (acks_late,
        # reject_on_worker_lost): take it once the dead one's heartbeat is stale.
        orphaned = job.status == GenerationJob.Status.RUNNING and (
            job.heartbeat_at is None or (now - job.heartbeat_at).total_seconds() > settings.TRAINING_STALE_AFTER_S)
        if job.status != GenerationJob.Status.QUEUED and not orphaned:
            return None
        job.status = GenerationJob.Status.RUNNING
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.save(update_fields=["status", "started_at", "heartbeat_at"])
    return job


def _prompts(job: GenerationJob):
    """The job's prompts, CHUNK at a time, in id order."""
    base = Prompt.objects.filter(campaign_id=job.model.campaign_id).order_by("pk")
    if job.prompt_ids is not None:
        ids = sorted(job.prompt_ids)
        for start in range(0, len(ids), CHUNK):
            yield list(base.filter(pk__in=ids[start:start + CHUNK]))
        return
    last = 0
    while chunk := list(base.filter(pk__gt=last)[:CHUNK]):
        yield chunk
        last = chunk[-1].pk


def _todo(job: GenerationJob):
    """Lists of the (prompt, sample) items with no answer from the endpoint,
    leaving out the prompts this job already gave up on."""
    given_up = set(job.failures.values_list("prompt_id", flat=True))
    for chunk in _prompts(job):
        have = set(Answer.objects.filter(external_model=job.model, prompt__in=chunk)
                   .values_list("prompt_id", "sample_index"))
        items = [Item(prompt_id=p.pk, sample_index=s, messages=prompt_messages(p))
                 for p in chunk if p.pk not in given_up for s in range(job.samples) if (p.pk, s) not in have]
        if items:
            yield items


def _answered(job: GenerationJob) -> int:
    answers = Answer.objects.filter(external_model=job.model, sample_index__lt=job.samples)
    if job.prompt_ids is not None:
        return answers.filter(prompt_id__in=job.prompt_ids).count()
    return answers.filter(prompt__campaign_id=job.model.campaign_id).count()


@dataclass
class _Tally:
    """What happened since the last write to the job row."""

    answered: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: set[int] = field(default_factory=set)

    def taken(self) -> "_Tally":
        out = _Tally(self.answered, self.requests, self.prompt_tokens, self.completion_tokens, self.failed)
        self.answered = self.requests = self.prompt_tokens = self.completion_tokens = 0
        self.failed = set()
        return out


def _store(job: GenerationJob, events: list, tally: _Tally) -> None:
    """Store a batch of the runner's events: answers in one insert (a row
    already there is left as it is), failures one by one."""
    answers = []
    for event in events:
        if isinstance(event, Requested):
            tally.requests += 1
        elif isinstance(event, Answered):
            c = event.completion
            sampling = dict(job.model.generation)
            if isinstance(sampling.get("seed"), int):
                sampling["seed"] += event.item.sample_index  # as the client sent it
            answers.append(Answer(
                prompt_id=event.item.prompt_id, external_model=job.model, sample_index=event.item.sample_index,
                text=c.text, sampling=sampling,
                # "truncated": the server stopped at max_tokens (the rating page and console say so).
                metadata={"job": job.pk, "served_model": c.model, "finish_reason": c.finish_reason,
                          "truncated": c.finish_reason == "length",
                          "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens},
                          "seconds": round(event.seconds, 3), "attempts": event.attempts},
            ))
            tally.prompt_tokens += c.prompt_tokens
            tally.completion_tokens += c.completion_tokens
        elif isinstance(event, GaveUp):
            error = redact(event.error, [job.model.api_key])
            GenerationFailure.objects.update_or_create(job=job, prompt_id=event.item.prompt_id,
                                                       defaults={"attempts": event.attempts, "error": error})
            tally.failed.add(event.item.prompt_id)
    if answers:
        Answer.objects.bulk_create(answers, ignore_conflicts=True)
        tally.answered += len(answers)


def _flush(job: GenerationJob, task_id: str, tally: _Tally) -> str:
    """Write progress and the heartbeat; the job's status now, or "" when
    the job is no longer this message's (queued again after a stall)."""
    t = tally.taken()
    failed = job.failures.count() if t.failed else None
    fields = dict(answered=F("answered") + t.answered, requests=F("requests") + t.requests,
                  prompt_tokens=F("prompt_tokens") + t.prompt_tokens,
                  completion_tokens=F("completion_tokens") + t.completion_tokens, heartbeat_at=timezone.now())
    if failed is not None:
        fields["failed"] = failed
    if not GenerationJob.objects.filter(pk=job.pk, celery_task_id=task_id).update(**fields):
        return ""
    return GenerationJob.objects.filter(pk=job.pk).values_list("status", flat=True).first() or ""


def _finish(job: GenerationJob, task_id: str, fatal: str) -> None:
    with transaction.atomic():
        row = GenerationJob.objects.select_for_update().filter(pk=job.pk, celery_task_id=task_id).first()
        if row is None:
            return
        row.answered = _answered(row)
        row.failed = row.failures.count()
        row.finished_at = row.heartbeat_at = timezone.now()
        if row.status == GenerationJob.Status.RUNNING:
            if fatal:
                row.status, row.error = GenerationJob.Status.FAILED, redact(fatal, [job.model.api_key])
            elif row.failed:
                last = row.failures.order_by("-pk").first()
                row.status = GenerationJob.Status.FAILED
                row.error = (f"{row.failed} of {row.prompts_total} prompts got no answer (see the failures; a new job "
                             f"asks them again). The last error: {last.error}")
            else:
                row.status = GenerationJob.Status.SUCCEEDED
        row.save(update_fields=["answered", "failed", "finished_at", "heartbeat_at", "status", "error"])
    log.info("generation job %s %s: %s answered, %s failed, %s requests", row.pk, row.status, row.answered,
             row.failed, row.requests)


def generation_job_run(*, job_id: int, task_id: str, budget_s: float | None = None) -> None:
    """Run the job for this message until every prompt is answered or given
    up on, the endpoint proves unusable, the job is cancelled, or `budget_s`
    seconds pass (then the job is queued again and goes on in a new
    message, so no task outlives the broker's time limits)."""
    job = _claim(job_id=job_id, task_id=task_id)
    if job is None:
        log.info("generation job %s: message %s has nothing to do (stale, finished or running elsewhere)",
                 job_id, task_id)
        return
    budget_s = settings.ENDPOINT_TASK_BUDGET_S if budget_s is None else budget_s
    model = job.model
    GenerationJob.objects.filter(pk=job.pk).update(answered=_answered(job), failed=job.failures.count())
    config = EndpointConfig(base_url=model.base_url, model_name=model.model_name, api_key=model.api_key,
                            generation=dict(model.generation), timeout_s=model.timeout_s,
                            max_concurrency=model.max_concurrency)
    runner = Runner(config, policy=endpoint_host_policy(), retry=retry_policy()).start()
    todo = _todo(job)
    tally, fatal, stopped_by = _Tally(), "", ""
    started = last_flush = time.monotonic()
    try:
        more = True
        while True:
            if more and runner.backlog < BACKLOG_PER_SLOT * max(1, model.max_concurrency):
                items = next(todo, None)
                if items is None:
                    more = False
                    runner.close()
                else:
                    runner.feed(items)
            events = []
            try:
                events.append(runner.events.get(timeout=0.2))
                while len(events) < 500:
                    events.append(runner.events.get_nowait())
            except queue.Empty:
                pass
            done = [e for e in events if isinstance(e, Stopped)]
            _store(job, events, tally)
            if done:
                fatal = done[0].fatal
                break
            if time.monotonic() - last_flush >= FLUSH_EVERY_S:
                last_flush = time.monotonic()
                status = _flush(job, task_id, tally)
                if status != GenerationJob.Status.RUNNING and not stopped_by:
                    stopped_by = status or "superseded"
                    runner.stop()
                elif time.monotonic() - started > budget_s and not stopped_by:
                    stopped_by = "budget"
                    runner.stop()
    finally:
        runner.stop()
        runner.join(timeout=30)
    status = _flush(job, task_id, tally)
    if stopped_by == "budget" and status == GenerationJob.Status.RUNNING:
        with transaction.atomic():
            log.info("generation job %s: this part used its %s s; queued the next part", job.pk, budget_s)
            generation_job_enqueue(job=job)
        return
    if stopped_by:
        log.info("generation job %s stopped: %s", job.pk, stopped_by)
    _finish(job, task_id, fatal)

"""Celery tasks: ids in, one service call, nothing else. Senders name these
tasks (config.celery.task_named) instead of importing them, and nothing is
imported at module level but the Celery app: the services are imported inside
each task, and the gpu worker's stage code only in training_stage_task."""
from celery import shared_task

from config.celery import Queue


@shared_task(bind=True, queue=Queue.GPU, acks_late=True, reject_on_worker_lost=True, max_retries=0)
def training_stage_task(self, *, run_id: int, stage: str) -> None:
    """Run one stage of a training run.

    Safe to run twice: a stage that already succeeded is a no-op, each stage
    writes its outputs under names derived from the run (publishing the same
    version again finds the first), and attempts are counted in the database
    before any work starts, so a stage that keeps killing its worker stops
    after TRAINING_MAX_ATTEMPTS and the run shows as failed. A failed stage's
    next try is a new message, queued by training_stage_fail like any other
    stage message (its id recorded, so cancel can revoke it).
    """
    from annotate.training.executor import training_stage_execute  # the ML side: gpu worker only

    training_stage_execute(run_id=run_id, stage=stage, task_id=self.request.id)


@shared_task(queue=Queue.DEFAULT, acks_late=True, max_retries=3)
def round_progress_check_task(*, round_id: int) -> None:
    """Start training if the round is complete. Safe to run twice: starting a
    round's training returns the existing run."""
    from annotate.services.rounds import round_progress_check

    round_progress_check(round_id=round_id)


@shared_task(queue=Queue.DEFAULT, acks_late=True, max_retries=0)
def training_runs_requeue_stale_task() -> None:
    """Periodic (beat): queue again the stages whose worker died. Safe to run
    twice: a queued stage re-runs only if it has not finished, and the
    attempt cap holds."""
    from django.conf import settings

    from annotate.training.recovery import training_runs_requeue_stale

    training_runs_requeue_stale(stale_after_s=settings.TRAINING_STALE_AFTER_S)


@shared_task(bind=True, queue=Queue.DEFAULT, acks_late=True, max_retries=None)
def simulate_raters_task(self, *, campaign_id: int, config: dict, until_round: int | None, started_at: float,
                         deadline: float) -> None:
    """Simulated raters (POST /api/campaigns/<id>/simulate/) rate for about a
    minute through the services the annotator API calls (ServiceRaterClient); then the task queues itself again
    (or waits for training to open the next round) until the simulation is
    over or `deadline` (a Unix time) passes. Safe to run twice: the server
    gives an annotator one rating per comparison and their own lease back,
    so a second copy only meets 409s, and max_ratings counts the database."""
    from annotate.services.simulation import simulation_step

    delay = simulation_step(campaign_id=campaign_id, config=config, until_round=until_round, started_at=started_at,
                            deadline=deadline, step=self.request.retries)
    if delay is not None:
        raise self.retry(countdown=delay)


@shared_task(queue=Queue.DEFAULT, acks_late=True, max_retries=0)
def rounds_progress_sweep_task() -> None:
    """Periodic (beat): start training on complete rounds whose check was
    never queued or was lost with the broker. Safe to run twice: see
    rounds_progress_sweep."""
    from annotate.services.rounds import rounds_progress_sweep

    rounds_progress_sweep()


@shared_task(queue=Queue.DEFAULT, acks_late=True, max_retries=0)
def store_leftovers_sweep_task() -> None:
    """Periodic (beat): remove what killed publishes and stages left in the
    model store's temp folders. Safe to run twice, and beside live work: a
    folder still held or recently changed is left alone."""
    from django.conf import settings

    from annotate.training.recovery import store_leftovers_sweep

    store_leftovers_sweep(older_than_s=settings.STORE_LEFTOVER_AGE_S)


@shared_task(bind=True, queue=Queue.ENDPOINTS, acks_late=True, reject_on_worker_lost=True, max_retries=0)
def generation_job_task(self, *, job_id: int) -> None:
    """Ask an endpoint for the answers a generation job still lacks (queue
    `endpoints`). Safe to run twice: only the message whose id the job
    records runs it (a stale or redelivered one is a no-op), each answer is
    stored once (one row per prompt, model and sample), and a resumed job
    asks only for what has no answer yet."""
    from annotate.services.generation import generation_job_run

    generation_job_run(job_id=job_id, task_id=self.request.id)


@shared_task(queue=Queue.DEFAULT, acks_late=True, max_retries=0)
def generation_jobs_requeue_stale_task() -> None:
    """Periodic (beat): queue again the generation jobs whose worker died or
    whose message the broker lost. Safe to run twice: a job queued again
    gets a new message id, and the old message does nothing."""
    from django.conf import settings

    from annotate.services.endpoints import generation_jobs_requeue_stale

    generation_jobs_requeue_stale(stale_after_s=settings.TRAINING_STALE_AFTER_S)


@shared_task(queue=Queue.DEFAULT, acks_late=True, max_retries=0)
def stats_refresh_task(*, name: str, campaign_id: int, params: dict) -> None:
    """Compute a memoized statistic (leaderboard, quality) for the campaign's
    current ratings, sent by a visit that was shown the previous result
    (selectors/memo.py memoized_latest). Safe to run twice: the second finds
    the result in the cache, or computes the same one."""
    from annotate.selectors.stats_refresh import stats_refresh

    stats_refresh(name=name, campaign_id=campaign_id, params=params)

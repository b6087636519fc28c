"""Running one stage of a run on the gpu worker: begin it (bookkeeping.py),
call its function (steps.py) with a Reporter while a thread beats on the run,
then record success or failure. What annotate/tasks.py's training_stage_task
calls; imported there inside the task, so the web process never loads it."""
import logging
import threading
from contextlib import contextmanager

from django.conf import settings

from annotate.training.bookkeeping import (
    training_stage_begin,
    training_stage_fail,
    training_stage_heartbeat,
    training_stage_succeed,
)
from annotate.training.reporter import Reporter, RunCancelled
from annotate.training.steps import STAGE_FUNCTIONS

log = logging.getLogger(__name__)


@contextmanager
def _heartbeat(run_id: int):
    """Beat on the run while its stage works, from a thread, so that a long
    step with no progress report (loading a model, one big batch) still shows
    the worker alive. Its own database connection, closed when it stops."""
    from django.db import connection

    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.TRAINING_HEARTBEAT_S):
                training_stage_heartbeat(run_id=run_id)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-run{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def training_stage_execute(*, run_id: int, stage: str, task_id: str | None = None) -> float | None:
    """Run one stage. Returns the delay before the retry training_stage_fail
    queued, or None when there is nothing more to do for this message.
    `task_id`: the Celery message's id, recorded on the stage."""
    run = training_stage_begin(run_id=run_id, stage=stage, task_id=task_id)
    if run is None:
        return None
    log.info("run %s: %s started (attempt %s)", run.pk, stage, run.attempts)
    reporter = Reporter(run, stage)
    try:
        with _heartbeat(run.pk):
            outputs = STAGE_FUNCTIONS[(run.kind, stage)](run, reporter)
    except RunCancelled:
        # training_run_cancel already recorded the run and its round; the
        # scratch folder went with its context manager, nothing was published.
        log.info("run %s: %s stopped, the run was cancelled", run.pk, stage)
        return None
    except Exception as exc:  # recorded on the run; the task retries or fails it
        log.exception("run %s: %s failed", run.pk, stage)
        return training_stage_fail(run_id=run.pk, stage=stage, error=exc)
    training_stage_succeed(run_id=run.pk, stage=stage, outputs=outputs)
    log.info("run %s: %s done", run.pk, stage)
    return None

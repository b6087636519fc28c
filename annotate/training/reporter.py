"""The callback a running stage reports through (progress, metrics), which
is also where the stage notices that its run was cancelled. Handed by
executor.py to each stage function in steps.py."""
import time

from annotate.models import TrainingRun
from annotate.training.bookkeeping import training_run_is_cancelled, training_stage_metrics, training_stage_progress


class RunCancelled(Exception):
    """The run was cancelled while this stage ran: stop, publish nothing."""


class Reporter:
    """Streams a stage's progress and metrics into its TrainingRun, and stops
    the stage (RunCancelled) once an engineer has cancelled the run: the
    trainers call back every few steps, so this is where a stage can notice."""

    def __init__(self, run: TrainingRun, stage: str, every_s: float = 1.0, check_every_s: float = 2.0):
        self.run_id, self.stage, self.every_s, self._last = run.pk, stage, every_s, 0.0
        # One status query per check_every_s at most, however often the trainer calls.
        self.check_every_s, self._last_check = check_every_s, float("-inf")

    def check_cancelled(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_check >= self.check_every_s:
            self._last_check = now
            if training_run_is_cancelled(run_id=self.run_id):
                raise RunCancelled(f"run {self.run_id} was cancelled during {self.stage}")

    def progress(self, fraction: float) -> None:
        self.check_cancelled()
        now = time.monotonic()
        if now - self._last >= self.every_s or fraction >= 1.0:
            self._last = now
            training_stage_progress(run_id=self.run_id, fraction=fraction)

    def metrics(self, step: int, metrics: dict) -> None:
        self.check_cancelled()
        training_stage_metrics(run_id=self.run_id, stage=self.stage, step=step, metrics=metrics)

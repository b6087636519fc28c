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
        # The highest fraction reported: the bar never moves back within an
        # attempt (a trainer's estimate of its remaining work may shrink).
        self.fraction = 0.0

    def check_cancelled(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_check >= self.check_every_s:
            self._last_check = now
            if training_run_is_cancelled(run_id=self.run_id):
                raise RunCancelled(f"run {self.run_id} was cancelled during {self.stage}")

    def progress(self, fraction: float) -> None:
        self.check_cancelled()
        fraction = max(self.fraction, min(1.0, float(fraction)))
        self.fraction = fraction
        now = time.monotonic()
        if now - self._last >= self.every_s or fraction >= 1.0:
            self._last = now
            training_stage_progress(run_id=self.run_id, fraction=fraction)

    def part(self, done: int, size: int, total: int):
        """The progress callback of one piece of a stage made of several
        (generate: the new policy's answers, then the previous one's): the
        piece's own 0..1 becomes the stage's (done + f * size) / total, so
        the bar grows with the answers written and never restarts at 0 or
        sits at 100% while the second piece works."""
        total = max(total, 1)
        return lambda fraction: self.progress((done + fraction * size) / total)

    def metrics(self, step: int, metrics: dict) -> None:
        self.check_cancelled()
        training_stage_metrics(run_id=self.run_id, stage=self.stage, step=step, metrics=metrics)

"""What a training run is made of: the stages of each kind in order, the run
statuses that end it, and the record each stage keeps in the run's `stages`
JSON (TrainingRun.stages: {stage name: StageRecord}).

Every write of a stage's record goes through stage_record_update or
stage_record_discard, which refuse a key StageRecord does not name: the
record's keys are documented here and nowhere else. Reads may use
stage_record or the JSON as it is (the API and the console show it raw).
"""
from enum import StrEnum
from typing import TypedDict, Unpack

from annotate.models import TrainingRun

# The one place that says what runs after what. annotate/training/steps.py
# maps each (kind, stage) to its function and checks it against this at import.
STAGES: dict[str, tuple[str, ...]] = {
    TrainingRun.Kind.BOOTSTRAP: ("import", "generate", "open"),
    # sft fine-tunes the round's candidate on new accepted demonstrations, or
    # skips and says why; the policy step starts from what it made.
    TrainingRun.Kind.TRAIN: ("snapshot", "sft", "reward", "policy", "generate", "open"),
}
FINISHED = (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED)
# A stage's working folder, inside the model store so that publishing from it
# is a rename on one filesystem (steps.py works in it; recovery.py sweeps it).
SCRATCH_DIR = ".scratch"


class StageStatus(StrEnum):
    """A stage's own status; a stage with no status yet is pending (queued or
    not reached), which is what the console shows for it."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    ERROR = "error"  # its last attempt raised; the next is queued unless the attempts are spent
    CANCELLED = "cancelled"  # the run was cancelled while this stage ran or waited for its retry


class StageRecord(TypedDict, total=False):
    """One stage's entry in TrainingRun.stages, as stored. Every key is
    optional: a key is written when the event it records happens, and a
    missing key means it has not (a stage queued and never begun holds only
    queued_at). Times are ISO 8601 strings with their time zone."""

    status: StageStatus
    # Sending (queue.py): when its latest message was sent, and when the
    # broker refused one (removed once it is sent again; recovery.py resends).
    queued_at: str
    send_failed_at: str
    # Running (bookkeeping.py): the Celery message running it now, every
    # message that ever ran it (cancel revokes them all), the tries counted
    # before each begins (reset to 0 when a failed run is started again).
    task_id: str
    task_ids: list[str]
    attempts: int
    started_at: str  # of the latest attempt
    # Ending: when it succeeded or was cancelled, how long its successful
    # attempt took (None when it never recorded a start), what it produced
    # (paths, versions, metrics), the traceback tail of its latest error.
    finished_at: str
    seconds: float | None
    outputs: dict
    last_error: str


STAGE_RECORD_KEYS = frozenset(StageRecord.__annotations__)


def stage_record(run: TrainingRun, stage: str) -> StageRecord:
    """A copy of the stage's record (empty when the stage was never queued);
    change it with stage_record_update."""
    return StageRecord(**run.stages.get(stage, {}))


def stage_record_update(run: TrainingRun, stage: str, **fields: Unpack[StageRecord]) -> StageRecord:
    """Set `fields` on the stage's record in run.stages, creating the record
    if the stage has none; the caller saves the run. Returns a copy of the
    record as it now is."""
    unknown = set(fields) - STAGE_RECORD_KEYS
    if unknown:
        raise ValueError(
            f"{', '.join(sorted(unknown))}: not a key of a stage's record; "
            "add it to StageRecord in annotate/training/stages.py, with what it records"
        )
    if "status" in fields:
        fields["status"] = StageStatus(fields["status"])  # ValueError on a status StageStatus lacks
    record = run.stages.setdefault(stage, {})
    record.update(fields)
    return StageRecord(**record)


def stage_record_discard(run: TrainingRun, stage: str, key: str) -> None:
    """Remove `key` from the stage's record, if the stage has one and it is there."""
    if key not in STAGE_RECORD_KEYS:
        raise ValueError(f"{key}: not a key of a stage's record (StageRecord, annotate/training/stages.py)")
    run.stages.get(stage, {}).pop(key, None)

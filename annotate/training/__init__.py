"""The training state machine: what runs after what when a campaign starts
or a round is trained on, who runs it, and what is recorded on the way.

A TrainingRun has a kind, and each kind a fixed order of stages
(stages.STAGES):

    bootstrap  import -> generate -> open          (base model answers round 0)
    train      snapshot -> sft -> reward -> policy -> generate -> open   (round n -> n+1)

(sft runs only when the campaign's sft_schedule, or the trigger, asks and
there are accepted demonstrations not yet trained on; otherwise it succeeds
at once with outputs {"skipped": true, "reason": ...}.)

The run's `stage` is the one running or next to run; its `status` is queued,
running, succeeded, failed or cancelled (stages.FINISHED end it); each stage
keeps a record in the run's `stages` JSON, described by stages.StageRecord.
Each stage is one message on the gpu queue; when a stage succeeds its worker
queues the next, when it fails it queues a retry after a back-off until
TRAINING_MAX_ATTEMPTS, then the run and its round are failed.

Who runs what:
- web (API, console, `manage.py train`, the round-complete check):
  runs.py starts and cancels runs, validating their config; queue.py sends
  the first stage after the commit and revokes a cancelled run's messages.
- gpu worker (annotate/tasks.py's training_stage_task): executor.py runs one
  stage: bookkeeping.py begins it (counting the attempt), steps.py's function
  for it does the work reporting through reporter.Reporter (which also stops
  it once the run is cancelled) while a thread beats on the run, then
  bookkeeping.py records success (queueing the next stage) or failure.
- beat (periodic tasks on the default worker): recovery.py sends again the
  stages whose worker died or whose message was lost, and sweeps what killed
  stages left in the model store.

Only steps.py and executor.py load the ML side (torch is imported inside the
stage functions); the web process imports neither.
"""

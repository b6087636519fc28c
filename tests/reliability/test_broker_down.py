"""The broker down at the moment something is queued (docs/architecture.md, invariant 1):
what was committed is acknowledged, nothing raises into the request, and the
beat sweeps send what was lost once Redis is back. In-process web and
services on PostgreSQL, a real private Redis that is killed and started
again; no worker runs, so the queues are read straight from Redis."""
import json
import uuid

import pytest

from annotate.models import Rating, Round, TrainingRun
from annotate.services.rounds import rounds_progress_sweep
from annotate.training.bookkeeping import training_stage_begin, training_stage_succeed
from annotate.training.recovery import training_runs_requeue_stale
from annotate.training.runs import training_run_start

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit callbacks run for real


class Broker:
    def __init__(self, server):
        self.server = server

    def task_ids(self, queue: str) -> list[str]:
        """Ids of the messages waiting in `queue` (kombu's Redis layout: a list of JSON envelopes)."""
        return [json.loads(raw)["headers"]["id"] for raw in self.server.client().lrange(queue, 0, -1)]


@pytest.fixture
def broker(private_redis, monkeypatch):
    """Point this process's Celery app at the private Redis for the test."""
    from config.celery import app

    def repoint(url):
        # Celery reads the environment variable before its own setting.
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        app.conf.broker_url = url
        # Pools are made from the URL on first use: drop them so the next
        # publish connects to `url`.
        app._pool = None
        app.amqp._producer_pool = None

    before = app.conf.broker_url
    repoint(private_redis.url)
    yield Broker(private_redis)
    repoint(before)


def rate(client, campaign_id: int, choice: str = "A") -> int:
    comparison = client.post(f"/api/campaigns/{campaign_id}/next/").data["comparison"]
    answer = client.post(
        "/api/ratings/",
        {"comparison": comparison, "choice": choice, "strength": 2, "idempotency_key": str(uuid.uuid4())},
        format="json",
    )
    return answer.status_code


def test_a_rating_that_completes_the_round_while_redis_is_down_is_201_and_the_sweep_starts_training(
    make_open_round, annotator, other_annotator, api_client_for, broker, caplog
):
    # given: one comparison, k=2, auto-train on, and Redis gone
    round_ = make_open_round(prompts=1, overlap=2, auto_train=True, annotators=[annotator, other_annotator])
    broker.server.kill()
    # when: both annotators rate it; the second rating fills it and its check can't be queued
    statuses = [rate(api_client_for(user), round_.campaign_id) for user in (annotator, other_annotator)]
    # then: both acknowledged and stored, the lost check logged, no training yet
    assert statuses == [201, 201]
    assert Rating.objects.filter(comparison__round=round_).count() == 2
    assert f"round {round_.pk}: could not queue its progress check" in caplog.text
    assert not TrainingRun.objects.exists()
    # when: Redis is back, empty (the check is not waiting anywhere), and beat runs the sweep
    broker.server.start()
    assert broker.task_ids("default") == []
    assert rounds_progress_sweep() == [round_.pk]
    # then: the round trains, its first stage is in the gpu queue under the id the run records
    run = TrainingRun.objects.get(round=round_)
    assert (run.kind, run.status, run.stage) == ("train", "queued", "snapshot")
    assert Round.objects.get(pk=round_.pk).status == Round.Status.TRAINING
    assert broker.task_ids("gpu") == [run.celery_task_id]
    # and the sweep again is a no-op
    assert rounds_progress_sweep() == []
    assert TrainingRun.objects.count() == 1 and broker.task_ids("gpu") == [run.celery_task_id]


def test_the_sweep_leaves_incomplete_and_manual_rounds_alone(make_open_round, annotator, api_client_for, broker):
    auto = make_open_round(prompts=2, overlap=1, auto_train=True, annotators=[annotator])
    manual = make_open_round(prompts=1, overlap=1, auto_train=False, annotators=[annotator])
    client = api_client_for(annotator)
    assert rate(client, auto.campaign_id) == 201  # 1 of 2 comparisons
    assert rate(client, manual.campaign_id) == 201  # complete, but trained only on request
    assert rounds_progress_sweep() == []
    assert not TrainingRun.objects.exists()


def test_a_stage_message_redis_refused_is_marked_and_sent_again_by_the_beat_sweep(
    make_open_round, annotator, api_client_for, broker, caplog
):
    # given: a run whose snapshot stage is running, its message sent
    round_ = make_open_round(prompts=1, overlap=1, annotators=[annotator])
    assert rate(api_client_for(annotator), round_.campaign_id) == 201
    run = training_run_start(campaign=round_.campaign)
    assert broker.task_ids("gpu") == [run.celery_task_id]
    sent = run.celery_task_id
    training_stage_begin(run_id=run.pk, stage="snapshot", task_id=sent)
    broker.server.kill()
    # when: the stage succeeds while Redis is down; queueing the next stage (sft) fails after the commit
    training_stage_succeed(run_id=run.pk, stage="snapshot", outputs={})
    # then: the run is recorded as waiting for sft, with the failed send marked
    run.refresh_from_db()
    assert (run.stage, run.status) == ("sft", "queued")
    assert run.stages["snapshot"]["task_id"] == sent and run.stages["snapshot"]["status"] == "succeeded"
    assert run.stages["sft"]["send_failed_at"]
    assert f"run {run.pk}: could not queue sft" in caplog.text
    # when: Redis is back (empty) and beat runs the requeue sweep
    broker.server.start()
    assert training_runs_requeue_stale(stale_after_s=120) == [run.pk]
    # then: the sft stage is in the gpu queue under a new recorded id, the mark cleared
    run.refresh_from_db()
    assert "send_failed_at" not in run.stages["sft"]
    assert run.celery_task_id not in ("", sent)
    assert broker.task_ids("gpu") == [run.celery_task_id]
    # and a second sweep sends nothing more
    assert training_runs_requeue_stale(stale_after_s=120) == []
    assert broker.task_ids("gpu") == [run.celery_task_id]


def test_messages_leave_only_after_their_transaction_commits(make_open_round, annotator, api_client_for, broker):
    from django.db import transaction

    # given: k=1, so the rating fills its comparison and queues the round check after its commit
    round_ = make_open_round(prompts=1, overlap=1, annotators=[annotator])
    assert rate(api_client_for(annotator), round_.campaign_id) == 201
    assert len(broker.task_ids("default")) == 1
    # when: a training run is started in a transaction that rolls back
    with pytest.raises(RuntimeError), transaction.atomic():
        training_run_start(campaign=round_.campaign)
        raise RuntimeError("rolled back")
    # then: no run and no stage message
    assert not TrainingRun.objects.exists()
    assert broker.task_ids("gpu") == []


def test_a_stage_message_redis_lost_in_a_restart_is_sent_again_and_the_old_one_is_skipped(
    make_open_round, annotator, api_client_for, broker, caplog
):
    # given: a run whose snapshot message waits in the gpu queue
    round_ = make_open_round(prompts=1, overlap=1, annotators=[annotator])
    assert rate(api_client_for(annotator), round_.campaign_id) == 201
    run = training_run_start(campaign=round_.campaign)
    first = run.celery_task_id
    assert broker.task_ids("gpu") == [first]
    # then: a message the broker holds is left alone, however old
    assert training_runs_requeue_stale(stale_after_s=120, lost_after_s=0) == []
    assert broker.task_ids("gpu") == [first]
    # when: Redis restarts without persistence (the message is gone) and beat runs the sweep
    broker.server.kill()
    broker.server.start()
    assert broker.task_ids("gpu") == []
    assert training_runs_requeue_stale(stale_after_s=120, lost_after_s=0) == [run.pk]
    # then: the stage is queued again under a new recorded id
    run.refresh_from_db()
    assert run.celery_task_id != first and broker.task_ids("gpu") == [run.celery_task_id]
    assert f"run {run.pk}: the broker lost the message of snapshot" in caplog.text
    # and a message sent only a moment ago is not asked about yet
    assert training_runs_requeue_stale(stale_after_s=120) == []
    # when: the lost message turns up after all, it is skipped; the new one runs the stage
    assert training_stage_begin(run_id=run.pk, stage="snapshot", task_id=first) is None
    assert training_stage_begin(run_id=run.pk, stage="snapshot", task_id=run.celery_task_id) is not None

"""Stale-while-revalidate of the heavy statistics (annotate/selectors/memo.py
memoized_latest): after a new rating the leaderboard and quality (API and
console page) answer at once with the previous result marked stale, a burst
of visits sends one refresh message, and once the task has run the result is
fresh and equal to an inline computation. The first visit ever computes
inline, and so does a visit whose refresh the broker refuses. A real private
Redis is the broker (killed for the broker-down test); the message is read
from Redis and its task run here with the message's kwargs, and in the last
test a real Celery worker takes it."""
import base64
import json
import os
import signal
import subprocess
import time
import uuid

import pytest
from django.test import Client

from annotate.models import Role
from annotate.selectors.leaderboard import campaign_leaderboard
from annotate.selectors.quality import campaign_quality
from annotate.tasks import stats_refresh_task
from config.platform import ROOT, celery_worker_command
from tests.factories import ratings_bulk_create, version_chain_rounds

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker(private_redis, monkeypatch):
    """This process's Celery app sending to the private Redis (as test_broker_down's)."""
    from config.celery import app

    def repoint(url):
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        app.conf.broker_url = url
        app._pool = None
        app.amqp._producer_pool = None

    before = app.conf.broker_url
    repoint(private_redis.url)
    yield private_redis
    repoint(before)


def messages(server) -> list[dict]:
    """The messages waiting in the default queue: {task, kwargs}."""
    found = []
    for raw in server.client().lrange("default", 0, -1):
        envelope = json.loads(raw)
        args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
        found.append({"task": envelope["headers"]["task"], "kwargs": kwargs})
    return found


@pytest.fixture
def rated(make_user):
    annotators = [make_user(Role.ANNOTATOR) for _ in range(3)]
    rounds = version_chain_rounds(versions=3, prompts=6, annotators=annotators, overlap=3)
    comparisons = [c for r in rounds for c in r.comparisons.order_by("pk")]
    ratings_bulk_create(
        {"comparison": c, "annotator": a, "choice": "AB"[(c.pk + n) % 2], "strength": 2, "time_on_task_ms": 3000}
        for c in comparisons[:-2] for n, a in enumerate(annotators)
    )
    return rounds, annotators


def rate(api_client_for, annotator, campaign_id: int) -> None:
    """One rating through the API, as annotators add them."""
    client = api_client_for(annotator)
    leased = client.post(f"/api/campaigns/{campaign_id}/next/").data["comparison"]
    answer = client.post("/api/ratings/", {"comparison": leased, "choice": "A", "strength": 3,
                                           "idempotency_key": str(uuid.uuid4())}, format="json")
    assert answer.status_code == 201


def fresh_cache(settings) -> None:
    settings.CACHES = {name: {**conf, "KEY_PREFIX": f"fresh-{uuid.uuid4().hex}"}
                       for name, conf in settings.CACHES.items()}


def without_age(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("stale", "as_of")}


def test_after_a_rating_the_leaderboard_is_the_previous_one_marked_stale_until_the_task_ran(
    rated, broker, api_client_for, ml_engineer, settings
):
    rounds, annotators = rated
    campaign = rounds[0].campaign
    api = api_client_for(ml_engineer)
    url = f"/api/campaigns/{campaign.pk}/leaderboard/"
    # the first visit ever: computed inline, nothing sent
    first = api.get(url).json()
    assert first["stale"] is False and messages(broker) == []
    assert first["as_of"]["ratings"] == first["as_of"]["ratings_now"]

    rate(api_client_for, annotators[0], campaign.pk)
    burst = [api.get(url).json() for _ in range(4)]
    # the previous result at once, marked with its age; one message for the burst
    assert all(b["stale"] is True for b in burst)
    assert all(without_age(b) == without_age(first) for b in burst)
    assert burst[0]["as_of"]["ratings"] == first["as_of"]["ratings"]
    assert burst[0]["as_of"]["ratings_behind"] == 1
    sent = messages(broker)
    assert sent == [{"task": "annotate.tasks.stats_refresh_task",
                     "kwargs": {"name": "leaderboard", "campaign_id": campaign.pk,
                                "params": {"resamples": 200, "seed": 0, "by_round": False}}}]

    stats_refresh_task(**sent[0]["kwargs"])  # what the worker does with it
    after = api.get(url).json()
    assert after["stale"] is False and after["as_of"]["ratings_behind"] == 0
    assert after["n_ratings"] == first["n_ratings"] + 1
    # equal to an inline computation (a cache with nothing in it: the first visit's path)
    fresh_cache(settings)
    inline = api.get(url).json()
    assert without_age(after) == without_age(inline) and inline["stale"] is False
    assert after["n_ratings"] == campaign_leaderboard(campaign=campaign)["n_ratings"]

    # the refresh is done, so the next new state sends one again
    rate(api_client_for, annotators[1], campaign.pk)
    assert api.get(url).json()["stale"] is True
    assert len(messages(broker)) == 2


def test_the_quality_and_models_pages_say_how_old_a_stale_result_is(rated, broker, api_client_for, ml_engineer):
    rounds, annotators = rated
    campaign = rounds[0].campaign
    page = Client()
    page.force_login(ml_engineer)
    for path in ("quality", "models"):
        assert "updating…" not in page.get(f"/console/campaigns/{campaign.pk}/{path}/").content.decode()
    before = campaign_quality(campaign=campaign, stale_ok=True)

    rate(api_client_for, annotators[0], campaign.pk)
    for path in ("quality", "models"):
        html = page.get(f"/console/campaigns/{campaign.pk}/{path}/").content.decode()
        assert "As of 1 rating ago (computed " in html and "updating…" in html
    sent = messages(broker)
    assert sorted(m["kwargs"]["name"] for m in sent) == ["leaderboard", "quality"]
    stale = campaign_quality(campaign=campaign, stale_ok=True)
    assert stale["stale"] and stale["n_ratings"] == before["n_ratings"]

    for message in sent:
        stats_refresh_task(**message["kwargs"])
    refreshed = campaign_quality(campaign=campaign, stale_ok=True)
    assert refreshed["stale"] is False and refreshed["n_ratings"] == before["n_ratings"] + 1
    assert without_age(refreshed) == campaign_quality(campaign=campaign)  # the inline computation's
    for path in ("quality", "models"):
        assert "updating…" not in page.get(f"/console/campaigns/{campaign.pk}/{path}/").content.decode()


def test_with_the_broker_down_a_new_state_is_computed_inline(rated, broker, api_client_for, ml_engineer, caplog):
    rounds, annotators = rated
    campaign = rounds[0].campaign
    api = api_client_for(ml_engineer)
    url = f"/api/campaigns/{campaign.pk}/quality/"
    first = api.get(url).json()
    rate(api_client_for, annotators[0], campaign.pk)
    broker.kill()
    answer = api.get(url)
    assert answer.status_code == 200
    assert answer.json()["stale"] is False and answer.json()["n_ratings"] == first["n_ratings"] + 1
    assert "broker refused the quality refresh" in caplog.text
    # the lock was let go, so a later visit tries again rather than waiting for a task never sent
    assert api.get(url).json()["stale"] is False


@pytest.mark.django_db(transaction=True)  # the worker reads what the test wrote
def test_a_real_worker_brings_the_refreshed_result(rated, broker, api_client_for, ml_engineer, settings, tmp_path):
    """The message a stale read sends is taken by a real Celery worker
    (queue default) sharing the database and the Redis cache, and the
    refreshed result arrives through it."""
    # A file cache of this test's own, which the worker is given as CACHE_URL.
    cache_dir = tmp_path / "cache"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                                   "LOCATION": str(cache_dir)}}
    db = settings.DATABASES["default"]
    env = {**os.environ, "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
           "CELERY_BROKER_URL": broker.url, "CACHE_URL": f"file://{cache_dir}", "RATCHET_DATA_DIR": str(tmp_path),
           "HF_HUB_OFFLINE": "1"}
    rounds, annotators = rated
    campaign = rounds[0].campaign
    api = api_client_for(ml_engineer)
    url = f"/api/campaigns/{campaign.pk}/leaderboard/"
    first = api.get(url).json()
    rate(api_client_for, annotators[0], campaign.pk)
    assert api.get(url).json()["stale"] is True

    log = open(tmp_path / "worker.log", "ab")
    worker = subprocess.Popen(
        celery_worker_command(queues=["default"], concurrency=1, name=f"stats-{uuid.uuid4().hex[:6]}@%h"),
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while (answer := api.get(url).json())["stale"] and time.time() < deadline:
            time.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    assert answer["stale"] is False, (tmp_path / "worker.log").read_text()[-3000:]
    assert answer["n_ratings"] == first["n_ratings"] + 1 and answer["as_of"]["ratings_behind"] == 0
    assert without_age(answer) == campaign_leaderboard(campaign=campaign)  # the inline computation's

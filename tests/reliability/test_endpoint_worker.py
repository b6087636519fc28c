"""Generation jobs in a real Celery worker (queue `endpoints`) of a real
platform (gunicorn + Celery on PostgreSQL + Redis), asking a real llama.cpp
server through the fault proxy: a job started over the API answers every
prompt and the key is in no log; a worker SIGKILLed in the middle of a job
is replaced, the beat sweep queues the job again, and it finishes without
losing an answer or asking again for one it had stored."""
import os
import signal
import time
from collections import Counter

import psycopg
import pytest

from config.platform import Platform
from tests.annotate.endpoints.proxy import Fault
from tests.annotate.endpoints.servers import (  # noqa: F401  (fixtures)
    GENERATION,
    SERVER_KEY,
    fault_proxy,
    live_llama,
    llama_server,
)

pytestmark = pytest.mark.e2e

PROMPTS = 12
QUICK = {"RATCHET_ENDPOINT_BACKOFF_S": "0.1", "RATCHET_ENDPOINT_BACKOFF_MAX_S": "1",
         "RATCHET_ENDPOINT_MAX_ATTEMPTS": "3"}


@pytest.fixture
def platform(tmp_path, private_redis):
    p = Platform(tmp_path, backend="services", extra_env={"CELERY_BROKER_URL": private_redis.url, **QUICK})
    try:
        yield p.start()
    finally:
        p.stop()


def setup_job(platform: Platform, url: str) -> tuple:
    """An engineer's campaign with PROMPTS prompts and an endpoint at `url`;
    the job started over the API. (client, campaign id, endpoint id, job id)."""
    engineer = platform.user("eve", "campaign_admin", "ml_engineer")
    status, campaign = engineer.post("/api/campaigns/create/", {"name": "endpoints", "base_model": "fake/base"})
    assert status == 201, campaign
    cid = campaign["id"]
    jsonl = "\n".join(f'{{"external_id": "q{i}", "prompt": "Name a fruit ({i})."}}' for i in range(PROMPTS)).encode()
    assert engineer.post(f"/api/campaigns/{cid}/prompts/import/", raw=jsonl, content_type="application/x-ndjson")[0] == 200
    status, endpoint = engineer.post(f"/api/campaigns/{cid}/endpoints/", {
        "name": "smollm2", "base_url": url, "model_name": "smollm2-135m", "generation": GENERATION,
        "max_concurrency": 2, "timeout_s": 30, "api_key": SERVER_KEY,
    })
    assert status == 201, endpoint
    status, job = engineer.post(f"/api/endpoints/{endpoint['id']}/generate/", {})
    assert status == 202, job
    return engineer, cid, endpoint["id"], job["id"]


def stored_answers(platform: Platform, endpoint_id: int) -> list[tuple[str, int]]:
    with psycopg.connect(platform.env["DATABASE_URL"]) as conn:
        return conn.execute(
            "SELECT p.text, a.sample_index FROM annotate_answer a JOIN annotate_prompt p ON p.id = a.prompt_id"
            " WHERE a.external_model_id = %s", [endpoint_id]).fetchall()


def test_a_job_started_over_the_api_runs_in_the_worker_and_the_key_is_in_no_log(platform, fault_proxy):
    # when
    engineer, cid, endpoint_id, job_id = setup_job(platform, fault_proxy.base_url)
    job = platform.wait_for(
        lambda: (j := engineer.get(f"/api/generation-jobs/{job_id}/")[1])["status"] in ("succeeded", "failed") and j,
        timeout=180, what="the generation job to finish",
    )
    # then
    assert job["status"] == "succeeded", job["error"]
    assert (job["answered"], job["failed"], job["requests"]) == (PROMPTS, 0, PROMPTS)
    assert job["completion_tokens"] > 0 and job["prompt_tokens"] > 0
    assert len(stored_answers(platform, endpoint_id)) == PROMPTS
    assert all(s.authorization == f"Bearer {SERVER_KEY}" for s in fault_proxy.log)  # the worker sent it...
    logs = platform.logs()
    assert "generation job" in logs  # ...and logged its work, without the key
    for name in ("web", "worker"):
        assert SERVER_KEY not in (platform.workdir / f"{name}.log").read_text(errors="replace")


def test_a_worker_killed_mid_job_is_replaced_and_the_job_finishes_asking_nothing_stored_again(platform, fault_proxy):
    # given: answers that take half a second each, so the job is caught mid-way
    fault_proxy.fault = lambda seen: Fault(delay=0.5)
    engineer, cid, endpoint_id, job_id = setup_job(platform, fault_proxy.base_url)
    platform.wait_for(lambda: engineer.get(f"/api/generation-jobs/{job_id}/")[1]["answered"] >= 3,
                      timeout=180, what="three answers stored")
    # when: the worker is SIGKILLed
    worker = next(p for p in platform.procs if p.name == "worker" and p.poll() is None)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    killed_at = time.monotonic()
    before = {text for text, _ in stored_answers(platform, endpoint_id)}
    assert 3 <= len(before) < PROMPTS, "the job finished before the worker could be killed: slow the proxy down"
    # and another one starts (its beat finds the job's heartbeat stale and queues it again)
    platform.start_worker()
    job = platform.wait_for(
        lambda: (j := engineer.get(f"/api/generation-jobs/{job_id}/")[1])["status"] in ("succeeded", "failed") and j,
        timeout=240, what="the job to finish on the new worker",
    )
    # then: the sweep found the dead worker's job...
    assert f"generation job {job_id} lost its worker; queued again" in (platform.workdir / "worker.log").read_text()
    # ...every prompt has exactly one answer...
    assert job["status"] == "succeeded", job["error"]
    answers = stored_answers(platform, endpoint_id)
    assert len(answers) == PROMPTS == len(set(answers)) == job["answered"]
    # ...and no prompt whose answer was stored before the kill was asked after it
    asked_after = {s.prompt for s in fault_proxy.log if s.at > killed_at}
    assert asked_after and not asked_after & before
    # (a request in flight at the kill may have been answered to a dead
    # worker and asked again: at most max_concurrency of them)
    twice = [p for p, n in Counter(s.prompt for s in fault_proxy.answered(200)).items() if n > 1]
    assert len(twice) <= 2, twice

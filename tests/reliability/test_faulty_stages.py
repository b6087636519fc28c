"""Stages that misbehave in a real worker (tests/reliability/faults.py), on
PostgreSQL and a private Redis, with gunicorn and beat:

- a stage that SIGKILLs its worker process every time it runs is stopped by
  the attempt counter in the database after TRAINING_MAX_ATTEMPTS, and its
  run shows failed with the reason (docs/architecture.md, invariant 5), instead of being
  redelivered for ever (acks_late + reject_on_worker_lost put it back each
  time);
- a stage busy in a long step that never reports (so the cooperative cancel
  check can't see the cancel) is stopped by cancel all the same: the stage's
  Celery task id is recorded on the run and revoked with terminate."""
import os
import time

import pytest

from config.platform import Platform

pytestmark = pytest.mark.e2e

MAX_ATTEMPTS = 3  # the platform's default, RATCHET_TRAINING_MAX_ATTEMPTS


@pytest.fixture
def faulty_platform(tmp_path, private_redis):
    """faulty_platform("kill:import") -> the platform, its worker running that fault."""
    started = []

    def start(fault: str) -> Platform:
        p = Platform(tmp_path, backend="services", extra_env={"CELERY_BROKER_URL": private_redis.url})
        started.append(p)
        marker = tmp_path / "fault-marker"
        p.fault_marker = marker
        return p.start(worker_env={"RATCHET_FAULT": fault, "RATCHET_FAULT_MARKER": str(marker)},
                       worker_app="tests.reliability.faults")

    yield start
    for p in started:
        p.stop()


def start_campaign(platform: Platform) -> tuple:
    admin = platform.user("alice", "campaign_admin", "ml_engineer")
    status, campaign = admin.post(
        "/api/campaigns/create/", {"name": "faulty", "base_model": "/never/loaded", "overlap": 1}
    )
    assert status == 201, campaign
    cid = campaign["id"]
    assert admin.post(f"/api/campaigns/{cid}/prompts/import/", raw=b'{"external_id": "1", "prompt": "Hi?"}',
                      content_type="application/x-ndjson")[0] == 200
    status, start = admin.post(f"/api/campaigns/{cid}/start/")
    assert status == 202, start
    return admin, start["training_run"]


def test_a_stage_that_kills_its_worker_every_time_stops_after_max_attempts_and_the_run_fails(faulty_platform):
    platform = faulty_platform("kill:import")
    admin, run_id = start_campaign(platform)

    def finished():
        run = admin.get(f"/api/training-runs/{run_id}/")[1]
        return run if run["status"] in ("failed", "succeeded", "cancelled") else None

    run = platform.wait_for(finished, timeout=240, what=f"the run to stop after {MAX_ATTEMPTS} lost workers")
    assert run["status"] == "failed"
    assert run["stages"]["import"]["attempts"] == MAX_ATTEMPTS
    assert f"import was started {MAX_ATTEMPTS} times and never finished: the worker was lost each time" in run["error"]
    # Each attempt really killed its process, and no more attempts were made after the run failed.
    time.sleep(5)  # room for a stray redelivery to show up
    log = (platform.workdir / "worker.log").read_text(errors="replace")
    assert log.count("exited with 'signal 9 (SIGKILL)'") == MAX_ATTEMPTS, log[-4000:]
    assert admin.get(f"/api/training-runs/{run_id}/")[1]["stages"]["import"]["attempts"] == MAX_ATTEMPTS
    worker = next(p for p in platform.procs if p.name == "worker")
    assert worker.poll() is None, "the worker itself must survive its pool processes"


def test_cancel_terminates_a_stage_that_never_reports(faulty_platform):
    platform = faulty_platform("hang:import")
    admin, run_id = start_campaign(platform)
    marker = platform.fault_marker

    def hanging():
        run = admin.get(f"/api/training-runs/{run_id}/")[1]
        return run if marker.exists() and run["status"] == "running" else None

    run = platform.wait_for(hanging, timeout=180, what="the stage to be under way")
    task_id = run["stages"]["import"]["task_id"]
    assert task_id and run["stages"]["import"]["task_ids"] == [task_id]
    pid = int(marker.read_text().split()[0])

    status, cancelled = admin.post(f"/api/training-runs/{run_id}/cancel/")
    assert status == 200 and cancelled["status"] == "cancelled", cancelled

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    # The stage never calls its Reporter, so only the revoke can stop it.
    platform.wait_for(gone, timeout=60, what=f"the stage's process {pid} to be terminated by the revoke")
    last = marker.stat().st_mtime
    time.sleep(1)
    assert marker.stat().st_mtime == last, "the stage is still at work"
    log = (platform.workdir / "worker.log").read_text(errors="replace")
    assert f"Terminating {task_id}" in log, log[-4000:]
    run = admin.get(f"/api/training-runs/{run_id}/")[1]
    assert run["status"] == "cancelled" and run["stages"]["import"]["status"] == "cancelled"
    worker = next(p for p in platform.procs if p.name == "worker")
    assert worker.poll() is None

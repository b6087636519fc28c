"""A gpu worker SIGKILLed in the middle of reward training: the stage must
run again on another worker and publish exactly one reward-model version
(docs/architecture.md, invariants 4 and 5). Real gunicorn + Celery on PostgreSQL + Redis."""
import os
import random
import signal
import time

import pytest

from config.platform import Platform, rate_everything
from rlhf.store import verify_folder
from tests.e2e.test_loop import PROMPTS, TINY_TRAINING, tiny_model  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

# Long enough that the worker is caught mid-stage, short enough to rerun quickly.
SLOW_REWARD = {**TINY_TRAINING, "reward": {**TINY_TRAINING["reward"], "epochs": 200}}
# How long a replacement worker gets to pick the stage up again (the beat
# sweep finds the dead worker's run within seconds), then to finish it (200
# epochs again, slow on a busy machine).
REDELIVERY_TIMEOUT_S = 120
RERUN_TIMEOUT_S = 600


def test_worker_killed_during_reward_training_reruns_the_stage_and_publishes_one_version(
    private_redis_platform: Platform, tiny_model: str  # noqa: F811
):
    platform = private_redis_platform
    admin = platform.user("alice", "campaign_admin", "ml_engineer")
    annotators = [platform.user(f"rater{i}", "annotator") for i in range(2)]
    status, campaign = admin.post(
        "/api/campaigns/create/",
        {"name": "kill", "base_model": tiny_model, "overlap": 2, "comparisons_per_round": len(PROMPTS),
         "training_config": SLOW_REWARD, "method": "rloo"},
    )
    assert status == 201, campaign
    cid = campaign["id"]
    jsonl = "\n".join(f'{{"external_id": "q{i}", "prompt": "{p}"}}' for i, p in enumerate(PROMPTS)).encode()
    assert admin.post(f"/api/campaigns/{cid}/prompts/import/", raw=jsonl, content_type="application/x-ndjson")[0] == 200
    assert admin.post(f"/api/campaigns/{cid}/annotators/", {"usernames": ["rater0", "rater1"]})[0] == 200
    assert admin.post(f"/api/campaigns/{cid}/start/")[0] == 202
    platform.wait_for(
        lambda: (admin.get(f"/api/campaigns/{cid}/progress/")[1]["round"] or {}).get("comparisons") == len(PROMPTS),
        timeout=180, what="round 0 to open",
    )
    rate_everything(annotators, cid, random.Random(0))

    def train_run():
        runs = admin.get(f"/api/training-runs/?campaign={cid}")[1]
        return next((r for r in runs if r["kind"] == "train"), None)

    def reward_training_under_way():
        run = train_run()
        if run is None:
            return None
        detail = admin.get(f"/api/training-runs/{run['id']}/")[1]
        assert detail["status"] != "failed", detail["error"]
        assert detail["stages"].get("reward", {}).get("status") != "succeeded", (
            "reward training finished before the worker could be killed: raise SLOW_REWARD epochs"
        )
        trained = [m for m in detail["metrics_history"] if m.get("stage") == "reward"]
        if detail["stage"] == "reward" and detail["status"] == "running" and trained:
            return detail
        return None

    run = platform.wait_for(reward_training_under_way, timeout=300, what="reward training to start", interval=0.2)
    assert run["stages"]["reward"]["status"] != "succeeded", "reward stage too fast to interrupt"
    worker = next(p for p in platform.procs if p.name == "worker" and p.poll() is None)
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool child, no chance to clean up
    worker.wait(timeout=30)
    time.sleep(1)
    platform.start_worker()

    def redelivered():
        detail = admin.get(f"/api/training-runs/{run['id']}/")[1]
        assert detail["status"] != "failed", detail["error"]
        return detail if detail["stages"]["reward"].get("attempts", 0) >= 2 else None

    try:
        platform.wait_for(redelivered, timeout=REDELIVERY_TIMEOUT_S, what="the reward stage to start again")
    except AssertionError:
        stuck = admin.get(f"/api/training-runs/{run['id']}/")[1]
        raise AssertionError(
            f"{REDELIVERY_TIMEOUT_S}s after the worker was killed and a new one started, the run is still "
            f"stage={stuck['stage']} status={stuck['status']} reward attempts="
            f"{stuck['stages']['reward'].get('attempts')}: the stage was never redelivered"
        ) from None

    def round1():
        detail = admin.get(f"/api/training-runs/{run['id']}/")[1]
        assert detail["status"] != "failed", detail["error"]
        progress = admin.get(f"/api/campaigns/{cid}/progress/")[1]
        # Round 1 opens a moment before the run records its last stage as done.
        opened = progress["round"] and progress["round"]["round"] == 1
        return detail if opened and detail["status"] == "succeeded" else None

    detail = platform.wait_for(round1, timeout=RERUN_TIMEOUT_S, what="the rerun reward stage to finish and round 1 to open")

    assert detail["status"] == "succeeded", detail
    assert detail["stages"]["reward"]["attempts"] == 2, detail["stages"]["reward"]
    models = admin.get(f"/api/campaigns/{cid}/models/")[1]
    assert len(models["reward_models"]) == 1, models["reward_models"]
    reward = models["reward_models"][0]
    verify_folder(reward["path"], reward["sha256"])

    # The killed attempt's scratch folder (its half-trained model) is left
    # behind, held by nobody: the store sweep removes it; nothing else is there.
    from rlhf.store import sweep_leftovers

    scratch = platform.workdir / "var" / "store" / ".scratch"
    left = sorted(str(p) for p in scratch.iterdir())
    assert len(left) == 1 and f"/run{run['id']}-" in left[0], left
    assert sweep_leftovers(scratch, older_than_s=0) == left

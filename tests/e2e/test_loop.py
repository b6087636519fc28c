"""The whole loop, end to end, as users drive it: real web and worker
processes, on PostgreSQL + Redis and on the embedded default."""
import random
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from config.platform import Platform, rate_everything
from rlhf.store import verify_folder

pytestmark = pytest.mark.e2e

PROMPTS = [
    "What is the capital of France?",
    "Name a fruit that is yellow.",
    "How many legs does a spider have?",
    "What colour is the sky on a clear day?",
    "Give me a word that rhymes with cat.",
    "What do bees make?",
]
TINY_TRAINING = {
    "reward": {"epochs": 3, "batch_size": 4, "lr": 1e-3, "max_length": 64},
    "policy": {"k": 2, "num_iterations": 2, "prompts_per_iteration": 4, "lr": 1e-3, "max_new_tokens": 12,
               "generation_batch_size": 8, "minibatch_size": 8},
    "dpo": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "max_length": 64, "beta": 0.1},
    "generate": {"max_new_tokens": 12},
}
# Each backend runs the loop with one of the two policy methods.
METHOD = {"services": "rloo", "embedded": "dpo"}


@pytest.fixture
def tiny_model(tmp_path_factory) -> str:
    from rlhf.tiny import build_tiny_model

    texts = PROMPTS * 20 + [
        "Paris is the capital of France.", "A banana is yellow.", "A spider has eight legs.",
        "The sky is blue.", "Hat rhymes with cat.", "Bees make honey.",
    ] * 20
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts, seed=0)


@pytest.fixture(params=["services", "embedded"])
def platform(request, tmp_path):
    p = Platform(tmp_path, backend=request.param)
    try:
        yield p.start()
    finally:
        p.stop()


def test_ratings_in_trained_model_out_next_round_open(platform: Platform, tiny_model: str):
    admin = platform.user("alice", "campaign_admin", "ml_engineer")
    annotators = [platform.user(f"rater{i}", "annotator") for i in range(3)]

    # An admin creates the campaign, imports prompts and adds the pool.
    status, campaign = admin.post(
        "/api/campaigns/create/",
        {"name": "e2e", "base_model": tiny_model, "overlap": 2, "comparisons_per_round": len(PROMPTS),
         "training_config": TINY_TRAINING, "method": METHOD[platform.backend]},
    )
    assert status == 201, campaign
    cid = campaign["id"]
    jsonl = "\n".join(f'{{"external_id": "q{i}", "prompt": "{p}"}}' for i, p in enumerate(PROMPTS)).encode()
    status, result = admin.post(f"/api/campaigns/{cid}/prompts/import/", raw=jsonl, content_type="application/x-ndjson")
    assert (status, result["created"]) == (200, len(PROMPTS)), result
    status, again = admin.post(f"/api/campaigns/{cid}/prompts/import/", raw=jsonl, content_type="application/x-ndjson")
    assert (status, again["created"], again["existing"]) == (200, 0, len(PROMPTS))
    assert admin.post(f"/api/campaigns/{cid}/annotators/", {"usernames": ["rater0", "rater1", "rater2"]})[0] == 200

    # Starting imports the base model and has it answer round 0.
    status, start = admin.post(f"/api/campaigns/{cid}/start/")
    assert status == 202, start
    platform.wait_for(
        lambda: (admin.get(f"/api/campaigns/{cid}/progress/")[1]["round"] or {}).get("comparisons") == len(PROMPTS),
        timeout=180, what="round 0 to open",
    )

    made = rate_everything(annotators, cid, random.Random(0))
    assert made == len(PROMPTS) * 2  # k = 2 per comparison, never more

    # The last rating completes the round: the worker trains and opens round 1.
    def round1():
        body = admin.get(f"/api/campaigns/{cid}/progress/")[1]
        runs = admin.get(f"/api/training-runs/?campaign={cid}")[1]
        failed = [r for r in runs if r["status"] == "failed"]
        assert not failed, failed[0]["error"]
        # Round 1 opens a moment before the run records its last stage as done.
        done = any(r["kind"] == "train" and r["status"] == "succeeded" for r in runs)
        return body if done and body["round"] and body["round"]["round"] == 1 else None

    progress = platform.wait_for(round1, timeout=600, what="round 1 to open")
    assert progress["round"]["comparisons"] == len(PROMPTS)
    assert (progress["round"]["candidate_version"], progress["round"]["baseline_version"]) == (1, 0)

    runs = admin.get(f"/api/training-runs/?campaign={cid}")[1]
    train = next(r for r in runs if r["kind"] == "train")
    assert train["status"] == "succeeded", train
    assert train["config"]["method"] == METHOD[platform.backend]
    policy_metrics = train["stages"]["policy"]["outputs"]["metrics"]
    assert ("policy/loss" if METHOD[platform.backend] == "dpo" else "policy/kl") in policy_metrics
    assert set(train["stages"]) == {"snapshot", "sft", "reward", "policy", "generate", "open"}
    assert train["stages"]["sft"]["outputs"]["skipped"] is True  # no demonstrations in this loop
    assert len(train["dataset_sha256"]) == 64
    detail = admin.get(f"/api/training-runs/{train['id']}/")[1]
    assert any("reward/loss" in m for m in detail["metrics_history"]), "reward metrics were not streamed"

    models = admin.get(f"/api/campaigns/{cid}/models/")[1]
    v0, v1 = models["policies"]
    assert (v0["version"], v1["version"], v1["parent"]) == (0, 1, 0)
    reward = models["reward_models"][0]
    assert {"reward/loss", "eval/reward/accuracy"} <= set(reward["metrics"])
    for version in (v0, v1, reward):
        verify_folder(version["path"], version["sha256"])  # raises if tampered
    old = load_file(str(next(Path(v0["path"]).glob("*.safetensors"))))
    new = load_file(str(next(Path(v1["path"]).glob("*.safetensors"))))
    assert any((old[k] != new[k]).any() for k in old), "the policy step changed no weight"

    # Round 1 is served to annotators: new policy against the previous one.
    status, body = annotators[0].post(f"/api/campaigns/{cid}/next/")
    assert status == 200 and body["round"] == 1


def test_a_stage_that_keeps_failing_is_retried_then_the_run_shows_failed_with_its_error(services_platform):
    platform = services_platform
    admin = platform.user("bob", "campaign_admin", "ml_engineer")
    status, campaign = admin.post(
        "/api/campaigns/create/", {"name": "broken", "base_model": "/nonexistent/model-folder", "overlap": 1}
    )
    assert status == 201, campaign
    cid = campaign["id"]
    admin.post(f"/api/campaigns/{cid}/prompts/import/", raw=b'{"external_id": "1", "prompt": "Hi?"}',
               content_type="application/x-ndjson")
    status, start = admin.post(f"/api/campaigns/{cid}/start/")
    assert status == 202

    def finished():
        run = admin.get(f"/api/training-runs/{start['training_run']}/")[1]
        return run if run["status"] in ("failed", "succeeded") else None

    run = platform.wait_for(finished, timeout=120, what="the bootstrap run to give up")
    assert run["status"] == "failed"
    assert run["stages"]["import"]["attempts"] == 3
    assert "import failed after 3 attempts" in run["error"]
    assert "The base model folder /nonexistent/model-folder does not exist" in run["error"]

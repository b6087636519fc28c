"""The sft stage run by a real gpu worker (Celery, a subprocess) on
PostgreSQL + Redis, driven through the API only: annotators send better
answers with their ratings, an admin reviews them through the review API
(accepts some, rejects one), an engineer trains, and the worker fine-tunes
on exactly the accepted ones before the policy step, which starts from the
SFT model. The SFT checkpoint then comes out through its download, checked
against its manifest. (tests/e2e/test_loop.py runs the loop with the sft
stage skipped; the in-process tests are tests/annotate/test_sft_stage.py.)"""
import io
import json
import uuid
import urllib.request
import zipfile

import pytest

from config.platform import Platform
from rlhf.store import verify_folder
from tests.e2e.test_loop import PROMPTS, TINY_TRAINING, tiny_model  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

SFT_TRAINING = {**TINY_TRAINING, "sft": {"epochs": 2, "batch_size": 2, "lr": 1e-3, "max_length": 64}}


@pytest.fixture
def platform(tmp_path):
    p = Platform(tmp_path, backend="services")
    try:
        yield p.start()
    finally:
        p.stop()


def download(client, path: str) -> tuple[bytes, str]:
    request = urllib.request.Request(client.base + path, headers={"Authorization": f"Token {client.token}"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return answer.read(), answer.headers["X-Checksum-SHA256"]


def test_a_real_worker_fine_tunes_on_the_accepted_demonstrations_then_the_policy_starts_from_it(
    platform: Platform, tiny_model: str, tmp_path  # noqa: F811
):
    admin = platform.user("alice", "campaign_admin", "ml_engineer")
    rater = platform.user("rater0", "annotator")
    # given: a DPO campaign that takes demonstrations, trains only when asked, fine-tunes every round
    status, campaign = admin.post(
        "/api/campaigns/create/",
        {"name": "sft-worker", "base_model": tiny_model, "overlap": 1, "comparisons_per_round": len(PROMPTS),
         "training_config": SFT_TRAINING, "method": "dpo", "auto_train": False, "demonstrations": "optional",
         "sft_schedule": "every_round"},
    )
    assert status == 201, campaign
    cid = campaign["id"]
    jsonl = "\n".join(f'{{"external_id": "q{i}", "prompt": "{p}"}}' for i, p in enumerate(PROMPTS)).encode()
    assert admin.post(f"/api/campaigns/{cid}/prompts/import/", raw=jsonl, content_type="application/x-ndjson")[0] == 200
    assert admin.post(f"/api/campaigns/{cid}/annotators/", {"usernames": ["rater0"]})[0] == 200
    assert admin.post(f"/api/campaigns/{cid}/start/")[0] == 202
    platform.wait_for(
        lambda: (admin.get(f"/api/campaigns/{cid}/progress/")[1]["round"] or {}).get("comparisons") == len(PROMPTS),
        timeout=180, what="round 0 to open",
    )
    # when: the rater edits answer A on four comparisons, writes one on both bad, rates the last plainly
    for i in range(len(PROMPTS)):
        status, shown = rater.post(f"/api/campaigns/{cid}/next/")
        assert status == 200, shown
        body = {"comparison": shown["comparison"], "idempotency_key": str(uuid.uuid4())}
        if i < 4:
            body |= {"choice": "A", "strength": 2,
                     "demonstration": {"text": f"{shown['response_a']} A better answer {i}.", "origin": "a"}}
        elif i == 4:
            body |= {"choice": "both_bad", "demonstration": {"text": "Written from nothing.", "origin": ""}}
        else:
            body |= {"choice": "B", "strength": 1}
        status, rating = rater.post("/api/ratings/", body)
        assert status == 201, rating
    # when: the admin reviews through the API: rejects the first, edits the second, accepts the rest
    status, listed = admin.get(f"/api/campaigns/{cid}/demonstrations/")
    assert status == 200 and listed["counts"]["pending"] == 5, listed
    ids = [d["id"] for d in listed["demonstrations"]]
    review = f"/api/campaigns/{cid}/demonstrations/{{}}/review/"
    assert admin.post(review.format(ids[0]), {"verdict": "reject", "reason": "not better"})[0] == 200
    status, edited = admin.post(review.format(ids[1]), {"verdict": "accept", "edited_text": "Edited by the admin."})
    assert (status, edited["status"], edited["text"]) == (200, "accepted", "Edited by the admin."), edited
    for pk in ids[2:]:
        assert admin.post(review.format(pk), {"verdict": "accept"})[1]["status"] == "accepted"
    accepted = sorted(ids[1:])
    # when: an engineer trains
    status, run = admin.post(f"/api/campaigns/{cid}/train/", {})
    assert status == 202, run

    def finished():
        detail = admin.get(f"/api/training-runs/{run['id']}/")[1]
        assert detail["status"] not in ("failed", "cancelled"), detail["error"]
        return detail if detail["status"] == "succeeded" else None

    run = platform.wait_for(finished, timeout=900, what="the train run to succeed")
    # then: the worker ran the sft stage on exactly the accepted demonstrations, with its snapshot
    sft_out = run["stages"]["sft"]["outputs"]
    assert sft_out.get("skipped") is not True, sft_out
    assert (sft_out["sft_version"], sft_out["start_version"], sft_out["conversations"]) == (1, 0, len(accepted))
    assert sft_out["dataset_sha256"] == run["sft_dataset_sha256"] and len(run["sft_dataset_sha256"]) == 64
    assert any("sft/loss" in m for m in run["metrics_history"]), "sft metrics were not streamed"
    assert (run["stages"]["policy"]["outputs"]["start"], run["stages"]["policy"]["outputs"]["reference"]) == (
        "sft-v1", "base")
    # then: lineage base -> sft -> policy in the models API
    models = admin.get(f"/api/campaigns/{cid}/models/")[1]
    [sft] = models["sft_models"]
    assert (sft["version"], sft["start"], sorted(sft["demonstration_ids"])) == (1, 0, accepted)
    assert [(p["version"], p["parent"], p["sft_model"]) for p in models["policies"]] == [(0, None, None), (1, 0, 1)]
    verify_folder(sft["path"], sft["sha256"])
    # then: the snapshot holds the reviewer's edit, not the author's text, and not the rejected one
    snapshot, digest = download(admin, f"/api/training-runs/{run['id']}/sft-dataset/")
    assert digest == run["sft_dataset_sha256"]
    archive = zipfile.ZipFile(io.BytesIO(snapshot))
    [name] = [n for n in archive.namelist() if n.endswith("conversations.jsonl")]
    rows = [json.loads(line) for line in archive.read(name).decode().splitlines()]
    assert sorted(r["demonstration_id"] for r in rows) == accepted
    answers = {r["demonstration_id"]: r["messages"][-1]["content"] for r in rows}
    assert answers[ids[1]] == "Edited by the admin." and "Written from nothing." in answers.values()
    # then: the SFT checkpoint downloads whole: unpacked, it verifies against the recorded sha256
    checkpoint, digest = download(admin, f"/api/sft-versions/{sft['id']}/download/")
    assert digest == sft["sha256"]
    zipfile.ZipFile(io.BytesIO(checkpoint)).extractall(tmp_path / "taken")
    [folder] = (tmp_path / "taken").iterdir()
    assert any(folder.glob("*.safetensors")) and json.loads((folder / "meta.json").read_text())
    verify_folder(folder, sft["sha256"])

"""A tampered checkpoint is refused by the pipeline stage that loads it,
with the IntegrityError visible in the run's error (docs/architecture.md, invariant 4).
(The download API's 409 for a tampered version: tests/annotate/test_runs_console.py.)"""
import uuid

import pytest
from django.test import override_settings

from annotate.models import RewardModelVersion, TrainingRun
from rlhf.store import ModelStore

pytestmark = pytest.mark.django_db


def test_a_tampered_base_checkpoint_fails_the_reward_stage_with_the_integrity_error(
    tmp_path, make_open_round, annotator
):
    from annotate.training.executor import training_stage_execute
    from annotate.training.runs import training_run_start
    from tests.factories import ratings_bulk_create

    store_root = tmp_path / "store"
    with override_settings(MODEL_STORE=str(store_root), TRAINING_MAX_ATTEMPTS=2):
        round_ = make_open_round(prompts=2, overlap=1, annotators=[annotator])
        src = tmp_path / "model"
        src.mkdir()
        (src / "model.safetensors").write_bytes(bytes(range(256)) * 64)
        (src / "config.json").write_text("{}")
        published = ModelStore(store_root).publish(src, f"campaign-{round_.campaign_id}/policy-v0")
        v0 = round_.candidate
        v0.path, v0.sha256 = published.path, published.sha256
        v0.save(update_fields=["path", "sha256"])
        ratings_bulk_create(
            {"comparison": c, "annotator": annotator, "choice": "A", "strength": 2, "idempotency_key": uuid.uuid4()}
            for c in round_.comparisons.all()
        )
        run = training_run_start(campaign=round_.campaign)
        assert training_stage_execute(run_id=run.pk, stage="snapshot") is None
        assert training_stage_execute(run_id=run.pk, stage="sft") is None  # no demonstrations: skipped

        weights = store_root / f"campaign-{round_.campaign_id}" / "policy-v0" / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[100] ^= 0xFF
        weights.write_bytes(bytes(data))

        assert training_stage_execute(run_id=run.pk, stage="reward") is not None  # recorded, will be retried
        run.refresh_from_db()
        assert run.status == TrainingRun.Status.QUEUED and run.stages["reward"]["status"] == "error"
        assert run.error.startswith("reward: IntegrityError:"), run.error
        assert "'model.safetensors' does not match its recorded sha256" in run.error

        assert training_stage_execute(run_id=run.pk, stage="reward") is None  # attempts spent
        run.refresh_from_db()
        assert run.status == TrainingRun.Status.FAILED
        assert "reward failed after 2 attempts" in run.error and "IntegrityError" in run.error
        assert "'model.safetensors' does not match its recorded sha256" in run.error
        assert not RewardModelVersion.objects.exists()

import json
import os
from pathlib import Path

import pytest

from rlhf import store as store_mod
from rlhf.store import IntegrityError, ModelStore, folder_sha256, load_verified


def make_model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    (path / "config.json").write_text('{"hidden_size": 32}')
    (path / "sub").mkdir()
    (path / "sub" / "tokenizer.json").write_text("{}")
    return path


def test_folder_sha256_is_deterministic_and_ignores_manifest(tmp_path):
    src = make_model_folder(tmp_path / "m")
    first = folder_sha256(src)
    (src / "manifest.json").write_text("anything")
    assert folder_sha256(src) == first
    (src / "config.json").write_text('{"hidden_size": 33}')
    assert folder_sha256(src) != first


def test_publish_then_verify_round_trip(tmp_path):
    src = make_model_folder(tmp_path / "m")
    store = ModelStore(tmp_path / "store")
    pub = store.publish(src, "campaign-3/policy-v2")
    assert pub.path == store.path_for("campaign-3/policy-v2")
    assert pub.sha256 == folder_sha256(src)
    manifest = json.loads((Path(pub.path) / "manifest.json").read_text())
    assert manifest["sha256"] == pub.sha256 and set(manifest["files"]) == {"model.safetensors", "config.json", "sub/tokenizer.json"}
    store.verify(pub.path, pub.sha256)
    store.verify("campaign-3/policy-v2", pub.sha256)
    assert load_verified(pub.path, pub.sha256) == pub.path


def test_verify_refuses_a_tampered_safetensors_file(tmp_path):
    store = ModelStore(tmp_path / "store")
    pub = store.publish(make_model_folder(tmp_path / "m"), "c/reward-v1")
    weights = Path(pub.path) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.safetensors.*tampered"):
        load_verified(pub.path, pub.sha256)


def test_verify_refuses_an_edited_manifest_and_a_wrong_sha(tmp_path):
    store = ModelStore(tmp_path / "store")
    pub = store.publish(make_model_folder(tmp_path / "m"), "c/v1")
    with pytest.raises(IntegrityError):
        store.verify(pub.path, "0" * 64)
    (Path(pub.path) / "extra.txt").write_text("added later")
    with pytest.raises(IntegrityError, match="extra.txt"):
        store.verify(pub.path, pub.sha256)


def test_publish_is_idempotent_for_a_redelivered_task(tmp_path):
    store = ModelStore(tmp_path / "store")
    src = make_model_folder(tmp_path / "m")
    first = store.publish(src, "c/policy-v1")
    second = store.publish(src, "c/policy-v1")
    assert first == second


def test_publish_over_a_corrupted_existing_version_raises(tmp_path):
    store = ModelStore(tmp_path / "store")
    src = make_model_folder(tmp_path / "m")
    pub = store.publish(src, "c/policy-v1")
    (Path(pub.path) / "config.json").write_text("changed")
    with pytest.raises(IntegrityError, match="config.json"):
        store.publish(src, "c/policy-v1")


def test_a_failed_publish_never_appears_under_the_final_name(tmp_path, monkeypatch):
    store = ModelStore(tmp_path / "store")
    src = make_model_folder(tmp_path / "m")
    calls = {"n": 0}
    real_fsync = store_mod._fsync_path

    def crash_midway(path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real_fsync(path)

    monkeypatch.setattr(store_mod, "_fsync_path", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        store.publish(src, "c/policy-v1")
    assert not os.path.exists(store.path_for("c/policy-v1"))
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []
    monkeypatch.setattr(store_mod, "_fsync_path", real_fsync)
    assert store.publish(src, "c/policy-v1").sha256 == folder_sha256(src)


def test_visible_version_is_always_complete_while_publishing(tmp_path, monkeypatch):
    store = ModelStore(tmp_path / "store")
    src = make_model_folder(tmp_path / "m")
    final = store.path_for("c/v1")
    seen = []
    real_rename = os.rename

    def watch_rename(a, b):
        # Just before the rename everything is written, yet nothing is visible.
        seen.append(os.path.exists(final))
        assert (Path(a) / "manifest.json").exists()
        real_rename(a, b)

    monkeypatch.setattr(store_mod.os, "rename", watch_rename)
    store.publish(src, "c/v1")
    assert seen == [False]


@pytest.mark.parametrize("bad", ["pytorch_model.bin", "model.pt", "w.pth", "data.pkl"])
def test_publish_refuses_pickle_files(tmp_path, bad):
    src = make_model_folder(tmp_path / "m")
    (src / bad).write_bytes(b"\x80\x04")
    store = ModelStore(tmp_path / "store")
    with pytest.raises(ValueError, match="pickle"):
        store.publish(src, "c/v1")
    assert not os.path.exists(store.path_for("c/v1"))


def test_publish_file_stores_a_dataset_snapshot(tmp_path):
    data = tmp_path / "run-7.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    store = ModelStore(tmp_path / "store")
    pub = store.publish_file(data, "datasets/campaign-3/run-7")
    assert (Path(pub.path) / "run-7.jsonl").read_text() == data.read_text()
    store.verify(pub.path, pub.sha256)
    assert store.publish_file(data, "datasets/campaign-3/run-7") == pub


@pytest.mark.parametrize("name", ["/abs/path", "../escape", "a/../../b", ".tmp/x", ""])
def test_path_for_rejects_names_outside_the_store(tmp_path, name):
    with pytest.raises(ValueError):
        ModelStore(tmp_path / "store").path_for(name)


def test_store_and_data_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, rlhf, rlhf.store, rlhf.data, rlhf.chat, rlhf.cli, rlhf.configs; assert 'torch' not in sys.modules and 'django' not in sys.modules"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)

"""A process SIGKILLed while ModelStore.publish copies leaves no
half-written version under the final name (DESIGN.md invariant 4), and the
same name can be published afterwards."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rlhf.store import MANIFEST, TMP_DIR, ModelStore, verify_folder

ROOT = Path(__file__).resolve().parents[2]
NAME = "campaign-1/policy-v1"
PUBLISH = "import sys; from rlhf.store import ModelStore; ModelStore(sys.argv[1]).publish(sys.argv[2], sys.argv[3])"


def _checkpoint(folder: Path, files: int = 600, size: int = 256 * 1024) -> Path:
    folder.mkdir()
    block = os.urandom(size)
    for i in range(files):
        (folder / f"shard-{i:04d}.safetensors").write_bytes(block[i % 97:] + block[: i % 97])
    return folder


def test_publish_killed_midway_leaves_nothing_visible_and_can_be_published_again(tmp_path):
    src = _checkpoint(tmp_path / "src")
    root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", PUBLISH, str(root), str(src), NAME], cwd=ROOT)
    tmp_root = root / TMP_DIR
    deadline = time.time() + 60
    try:
        # Kill once the copy is under way: the temp folder holds some, not all, files.
        while time.time() < deadline:
            temps = [d for d in tmp_root.iterdir()] if tmp_root.is_dir() else []
            if temps and sum(1 for _ in temps[0].iterdir()) >= 20:
                break
            assert proc.poll() is None, "publish finished before it could be killed: make the folder larger"
            time.sleep(0.01)
        else:
            raise AssertionError("the publish never started copying")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    final = root / NAME
    store = ModelStore(root)
    # Either nothing under the final name, or (killed after the rename) a complete, verifying version.
    if final.exists():
        verify_folder(final, __import__("json").loads((final / MANIFEST).read_text())["sha256"])
    else:
        assert store.find(final) is None
    # Whatever the kill left is only under .tmp/, never a version a loader could pick up.
    assert all(p.parts[len(root.parts)] == TMP_DIR for p in root.rglob("*") if p.is_file() and not final.exists())

    published = store.publish(src, NAME)
    assert published.path == str(final)
    verify_folder(published.path, published.sha256)
    assert len([p for p in final.iterdir() if p.name != MANIFEST]) == 600

"""A process SIGKILLed while ModelStore.publish copies leaves no
half-written version under the final name (docs/architecture.md, invariant 4), and the
same name can be published afterwards. What it left under .tmp/ is removed
by the sweep once nothing holds it and it is old enough; a publish that is
still going is never swept, however old its files."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.test import override_settings

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


def _publish_under_way(root: Path, src: Path) -> subprocess.Popen:
    """A publish in another process, returned once its copy is under way: the
    temp folder holds some, not all, files."""
    proc = subprocess.Popen([sys.executable, "-c", PUBLISH, str(root), str(src), NAME], cwd=ROOT)
    tmp_root = root / TMP_DIR
    deadline = time.time() + 60
    while time.time() < deadline:
        temps = [d for d in tmp_root.iterdir()] if tmp_root.is_dir() else []
        if temps and sum(1 for _ in temps[0].iterdir()) >= 20:
            return proc
        if proc.poll() is not None:
            raise AssertionError("publish finished before it could be caught: make the folder larger")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("the publish never started copying")


def _age(path: Path, seconds: float) -> None:
    """Make everything under `path` look `seconds` old."""
    then = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (then, then), follow_symlinks=False)


def test_publish_killed_midway_leaves_nothing_visible_and_can_be_published_again(tmp_path):
    src = _checkpoint(tmp_path / "src")
    root = tmp_path / "store"
    proc = _publish_under_way(root, src)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    final = root / NAME
    store = ModelStore(root)
    # Either nothing under the final name, or (killed after the rename) a complete, verifying version.
    if final.exists():
        verify_folder(final, json.loads((final / MANIFEST).read_text())["sha256"])
    else:
        assert store.find(final) is None
    # Whatever the kill left is only under .tmp/, never a version a loader could pick up.
    assert all(p.parts[len(root.parts)] == TMP_DIR for p in root.rglob("*") if p.is_file() and not final.exists())

    # The sweep: a fresh leftover stays (its writer might be alive on a slow disk)...
    leftovers = sorted(str(p) for p in (root / TMP_DIR).iterdir())
    assert leftovers or final.exists(), "the kill left no partial copy to sweep"
    assert store.sweep_tmp(older_than_s=3600) == []
    # ...one older than the limit, which no live process holds, goes.
    _age(root / TMP_DIR, 7200)
    assert store.sweep_tmp(older_than_s=3600) == leftovers
    assert list((root / TMP_DIR).iterdir()) == []

    published = store.publish(src, NAME)
    assert published.path == str(final)
    verify_folder(published.path, published.sha256)
    assert len([p for p in final.iterdir() if p.name != MANIFEST]) == 600
    # A sweep never touches published versions.
    assert store.sweep_tmp(older_than_s=0) == []
    verify_folder(published.path, published.sha256)


def test_a_sweep_never_takes_a_publish_that_is_still_running(tmp_path):
    # given: a publish frozen half-way (SIGSTOP: alive, holding its folder), its files made old
    src = _checkpoint(tmp_path / "src")
    root = tmp_path / "store"
    proc = _publish_under_way(root, src)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        _age(root / TMP_DIR, 7200)
        # when
        swept = ModelStore(root).sweep_tmp(older_than_s=0)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    # then: nothing swept, and the publish completes into a verifying version
    assert swept == []
    assert proc.wait(timeout=120) == 0
    final = root / NAME
    verify_folder(final, json.loads((final / MANIFEST).read_text())["sha256"])
    assert len([p for p in final.iterdir() if p.name != MANIFEST]) == 600


def test_the_beat_sweep_removes_a_killed_stages_scratch_and_publish_but_not_a_live_stages(tmp_path):
    from types import SimpleNamespace

    from annotate.training import steps
    from annotate.tasks import store_leftovers_sweep_task

    root = tmp_path / "store"
    # given: what a killed stage left (scratch) and a killed publish left (.tmp), both old
    dead_scratch = root / ".scratch" / "run7-dead"
    dead_publish = root / TMP_DIR / "0123abcd"
    for folder in (dead_scratch, dead_publish):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "model.safetensors").write_bytes(b"x" * 1024)
        _age(folder, 7200)
    with override_settings(MODEL_STORE=str(root), STORE_LEFTOVER_AGE_S=3600):
        # and a stage at work in its own scratch folder (held), as old
        with steps._scratch(SimpleNamespace(pk=8)) as live:
            (Path(live) / "checkpoint.safetensors").write_bytes(b"y" * 1024)
            _age(Path(live), 7200)
            # when: beat's task runs
            store_leftovers_sweep_task()
            # then: the dead ones are gone, the live one is untouched
            assert not dead_scratch.exists() and not dead_publish.exists()
            assert (Path(live) / "checkpoint.safetensors").read_bytes() == b"y" * 1024
        assert not Path(live).exists()  # the stage cleans up after itself

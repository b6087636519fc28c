"""A checksummed, append-only model store rooted at a local folder.

Every published version is a folder holding its files plus `manifest.json`
(each file's sha256 and the folder's sha256). A version appears under its
final name only once it is complete, and loaders verify it before use
(docs/architecture.md, invariant 4). Pickle-based formats are refused outright.

    python -m rlhf.store verify PATH SHA256
    python -m rlhf.store publish SRC NAME --root STORE
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
# Formats that unpickle on load; a store that never holds them can never be
# made to execute code by a tampered checkpoint.
FORBIDDEN_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Temp folders live inside the root so the final os.rename stays on one
# filesystem and is atomic.
TMP_DIR = ".tmp"
_CHUNK = 1 << 20


class IntegrityError(Exception):
    """A stored version does not match its recorded sha256."""


@dataclass(frozen=True)
class Published:
    path: str  # absolute path of the published version folder
    sha256: str  # folder_sha256 of that folder; record it next to the path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _list_files(folder: Path) -> list[str]:
    """Relative posix paths of every file, manifest excluded, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(folder).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def _file_hashes(folder: Path) -> dict[str, str]:
    return {rel: file_sha256(folder / rel) for rel in _list_files(folder)}


def _digest(file_hashes: dict[str, str]) -> str:
    # One "<sha256>  <relpath>" line per file, like sha256sum output, so the
    # folder hash can be re-derived by hand with standard tools.
    lines = "".join(f"{h}  {rel}\n" for rel, h in sorted(file_hashes.items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def folder_sha256(path: str | Path) -> str:
    """Deterministic sha256 over every file (relative path + content hash)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; folder_sha256 needs a model or dataset folder")
    return _digest(_file_hashes(folder))


def _refuse_pickles(folder: Path) -> None:
    bad = [rel for rel in _list_files(folder) if rel.lower().endswith(FORBIDDEN_SUFFIXES)]
    if bad:
        raise ValueError(
            f"{folder} contains pickle-based files {bad}; the store holds safetensors only. "
            "Re-save the model with save_pretrained() (safetensors is the default) and remove these files."
        )


def verify_folder(path: str | Path, sha256: str) -> None:
    """Raise IntegrityError unless every file in `path` matches `sha256`."""
    folder = Path(path)
    advice = (
        "The checkpoint was tampered with or corrupted: do not load it. "
        "Restore the folder from a backup or re-run the stage that produced it."
    )
    if not folder.is_dir():
        raise IntegrityError(f"{folder} does not exist or is not a folder. {advice}")
    try:
        recorded = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError) as exc:
        raise IntegrityError(f"{folder}/{MANIFEST} is missing or unreadable ({exc}). {advice}") from exc
    actual_files = set(_list_files(folder))
    missing = sorted(set(recorded) - actual_files)
    extra = sorted(actual_files - set(recorded))
    if missing:
        raise IntegrityError(f"{folder}: files {missing} are listed in {MANIFEST} but missing. {advice}")
    if extra:
        raise IntegrityError(f"{folder}: files {extra} are not in {MANIFEST}; something added them. {advice}")
    for rel in sorted(recorded):
        if file_sha256(folder / rel) != recorded[rel]:
            raise IntegrityError(f"{folder}: file '{rel}' does not match its recorded sha256. {advice}")
    # The per-file check above trusts the manifest; the folder hash ties the
    # manifest itself to the sha256 the caller recorded in the database.
    actual = _digest(recorded)
    if actual != sha256:
        raise IntegrityError(
            f"{folder}: folder sha256 is {actual}, expected {sha256} (manifest.json was edited "
            f"or this is a different version). {advice}"
        )
    _refuse_pickles(folder)


def load_verified(path: str | Path, sha256: str) -> str:
    """Verify then return `path`; call before any from_pretrained on stored files."""
    verify_folder(path, sha256)
    return str(path)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hold(folder: str | Path, *, wait: bool = True) -> int | None:
    """Lock `folder` against sweep_leftovers while it is written: an
    exclusive flock on the folder itself (nothing extra lands in it), held
    until the returned descriptor is closed and dropped by the kernel when
    the process dies, so a killed writer's folder is free to sweep. With
    wait=False: None if someone else holds it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def holding(folder: str | Path) -> Iterator[None]:
    """`_hold` for the length of a with block (a stage's scratch folder)."""
    fd = _hold(folder)
    try:
        yield
    finally:
        os.close(fd)


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                try:
                    newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


def sweep_leftovers(folder: str | Path, *, older_than_s: float) -> list[str]:
    """Remove each entry of a temp folder (a store's .tmp/, a worker's
    scratch) that no live writer holds (see `holding`) and in which nothing
    changed for `older_than_s` seconds: what a killed publish or stage left.
    Nothing under .tmp/ is ever a version (path_for refuses the name), so
    this only frees disk. Returns the paths removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    cutoff = time.time() - older_than_s
    removed = []
    for entry in sorted(folder.iterdir()):
        try:
            if _newest_mtime(entry) > cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                fd = _hold(entry, wait=False)
                if fd is None:
                    continue  # a live publish or stage holds it
                try:
                    shutil.rmtree(entry)
                finally:
                    os.close(fd)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue  # gone meanwhile: renamed into place or cleaned by its owner
        removed.append(str(entry))
    return removed


class ModelStore:
    """Versions under `root/<name>/`, each published atomically with a manifest."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, name: str) -> str:
        rel = Path(name)
        if rel.is_absolute() or not rel.parts or ".." in rel.parts or rel.parts[0] == TMP_DIR:
            raise ValueError(
                f"store name {name!r} must be a relative path like 'campaign-3/policy-v2' "
                f"without '..' and not under {TMP_DIR}/"
            )
        return str(self.root / rel)

    def _resolve(self, path: str | Path) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.path_for(str(p)))

    def verify(self, path: str | Path, sha256: str) -> None:
        """`path` is absolute or a store name; raises IntegrityError on mismatch."""
        verify_folder(self._resolve(path), sha256)

    def find(self, path: str | Path) -> Published | None:
        """A folder that was published by a ModelStore (it has a manifest),
        verified; None for any other folder. Lets a campaign use a model that
        is already in the store without copying it."""
        folder = Path(path)
        if not (folder.is_dir() and (folder / MANIFEST).is_file()):
            return None
        return self._existing(folder.resolve())

    def publish(self, src_dir: str | Path, name: str) -> Published:
        """Copy `src_dir` in as version `name`; idempotent for a redelivered task."""
        src = Path(src_dir)
        if not src.is_dir():
            raise FileNotFoundError(f"cannot publish {src}: not a folder")
        _refuse_pickles(src)
        # A stale top-level manifest from an earlier publish is rewritten, not copied.
        def skip_manifest(folder: str, names: list[str]) -> list[str]:
            return [MANIFEST] if Path(folder) == src and MANIFEST in names else []

        return self._publish(name, lambda tmp: shutil.copytree(src, tmp, ignore=skip_manifest, dirs_exist_ok=True))

    def publish_file(self, src_file: str | Path, name: str) -> Published:
        """Publish one file (a dataset snapshot) as a folder holding it and a manifest."""
        src = Path(src_file)
        if not src.is_file():
            raise FileNotFoundError(f"cannot publish {src}: not a file")
        if src.name == MANIFEST or src.name.lower().endswith(FORBIDDEN_SUFFIXES):
            raise ValueError(f"cannot publish {src.name}: reserved name or pickle-based format")

        def fill(tmp: Path) -> None:
            shutil.copy2(src, tmp / src.name)

        return self._publish(name, fill)

    def _publish(self, name: str, fill) -> Published:
        final = Path(self.path_for(name))
        if final.exists():
            return self._existing(final)
        tmp_root = self.root / TMP_DIR
        tmp_root.mkdir(exist_ok=True)
        tmp = tmp_root / uuid.uuid4().hex
        tmp.mkdir()
        # Held until the rename: sweep_leftovers never takes a live publish.
        held = _hold(tmp)
        try:
            fill(tmp)
            _refuse_pickles(tmp)
            hashes = _file_hashes(tmp)
            sha = _digest(hashes)
            manifest = {"files": hashes, "sha256": sha, "name": name}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            # Data must be on disk before the rename makes it visible, or a
            # crash could leave a complete-looking folder with empty files.
            for rel in [*hashes, MANIFEST]:
                _fsync_path(tmp / rel)
            _fsync_path(tmp)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                # Another worker published the same name first: theirs stands.
                if final.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
                    return self._existing(final)
                raise
            _fsync_path(final.parent)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            os.close(held)
        return Published(path=str(final), sha256=sha)

    def sweep_tmp(self, *, older_than_s: float) -> list[str]:
        """Remove what killed publishes left under .tmp/ (see sweep_leftovers)."""
        return sweep_leftovers(self.root / TMP_DIR, older_than_s=older_than_s)

    def _existing(self, final: Path) -> Published:
        # A redelivered task publishes again; the first complete copy wins
        # because its sha256 may already be recorded in the database.
        try:
            sha = json.loads((final / MANIFEST).read_text())["sha256"]
        except (OSError, ValueError, KeyError) as exc:
            raise IntegrityError(
                f"{final} already exists but has no readable {MANIFEST}; it was not written by "
                "ModelStore.publish. Move it aside and publish again."
            ) from exc
        verify_folder(final, sha)
        return Published(path=str(final), sha256=sha)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.store", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify")
    v.add_argument("path")
    v.add_argument("sha256")
    p = sub.add_parser("publish")
    p.add_argument("src")
    p.add_argument("name")
    p.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "verify":
        try:
            verify_folder(args.path, args.sha256)
        except IntegrityError as exc:
            print(exc, file=sys.stderr)
            return 1
        print("ok")
        return 0
    store = ModelStore(args.root)
    src = Path(args.src)
    pub = store.publish(src, args.name) if src.is_dir() else store.publish_file(src, args.name)
    print(json.dumps({"path": pub.path, "sha256": pub.sha256}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Store folders (checkpoints, dataset snapshots) streamed out as zip files.

The folder is verified against its recorded sha256 before the first byte is
sent (invariant 4: a tampered folder is refused, not served), then written
into the zip a megabyte at a time, so a 540 MB checkpoint never sits in
memory. Entries are stored, not deflated: safetensors do not compress.
"""
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from rlhf.store import IntegrityError, ModelStore

_CHUNK = 1 << 20


class _Pipe:
    """A write-only file for ZipFile whose bytes the generator hands on.
    Not seekable, so zipfile writes sizes in data descriptors after each entry."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def _files(folder: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        out += [(Path(dirpath) / name).relative_to(folder).as_posix() for name in filenames]
    return sorted(out)


def folder_zip_verified(*, path: str, sha256: str, prefix: str) -> Iterator[bytes]:
    """Verify `path` against `sha256` now (IntegrityError if it does not
    match), then return an iterator over a zip of its files, manifest.json
    included so the receiver can check them, under `prefix/`."""
    store = ModelStore(settings.MODEL_STORE)
    store.verify(path, sha256)
    folder = Path(path) if Path(path).is_absolute() else Path(store.path_for(path))
    return _zip_stream(folder, _files(folder), prefix)


def _zip_stream(folder: Path, names: list[str], prefix: str) -> Iterator[bytes]:
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for rel in names:
            info = zipfile.ZipInfo.from_file(folder / rel, arcname=f"{prefix}/{rel}")
            with open(folder / rel, "rb") as src, archive.open(info, mode="w", force_zip64=True) as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
                    yield pipe.take()
            yield pipe.take()
    yield pipe.take()


__all__ = ["IntegrityError", "folder_zip_verified"]

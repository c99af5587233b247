"""A decoded-image cache: each file is decoded and resized once, then read from a memory-mapped array.

JPEG decoding and resizing of full-size X-rays dominates the cost of an epoch on a small model. The
cache stores every image as ``size x size`` uint8 rows of one flat file (``images-{size}.u8``) that
data-loader workers memory-map, so later epochs and later runs read pixels straight from the page cache.

Entries are keyed by the SHA-256 of the file's bytes and the target size, so a changed file gets a
new entry (the old row is simply no longer referenced). File hashes are memoised by (path, size,
mtime) so that a run does not re-read every file to hash it. Appends take a lock and write the index
last, atomically: a run killed mid-append leaves a valid cache behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cxrdistill.data.io import UnreadableImageError, load_for_model
from cxrdistill.files import atomic_write_json, file_digest, locked


def user_cache_dir() -> Path:
    """This user's cache folder for cxrdistill on this machine: ``$XDG_CACHE_HOME/cxrdistill`` (else the
    platform's: ``%LOCALAPPDATA%`` on Windows, ``~/Library/Caches`` on macOS, ``~/.cache``).

    Evaluating a checkpoint caches here, never where the machine that trained it kept its cache.
    """
    if os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"])
    elif os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    elif os.uname().sysname == "Darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path.home() / ".cache"
    return base / "cxrdistill"

INDEX_VERSION = 1


class FileHasher:
    """Content hashes of files, memoised on disk by (path, size, mtime)."""

    def __init__(self, memo_path: Path | None) -> None:
        self.memo_path = memo_path
        self._memo: dict[str, list] = {}
        if memo_path is not None and memo_path.is_file():
            try:
                self._memo = json.loads(memo_path.read_text())
            except ValueError:
                self._memo = {}  # a damaged memo only costs re-hashing

    def digest(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        entry = self._memo.get(key)
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            return entry[2]
        digest = file_digest(path)
        self._memo[key] = [stat.st_size, stat.st_mtime_ns, digest]
        return digest

    def save(self) -> None:
        if self.memo_path is not None:
            atomic_write_json(self.memo_path, self._memo)


class DecodedImageCache:
    """Decoded ``size x size`` grey images in one memory-mapped file, indexed by content hash; one file per
    size and border crop."""

    def __init__(self, directory: str | Path, size: int, border_crop: float = 0.0) -> None:
        self.directory = Path(directory)
        self.size, self.border_crop = size, border_crop
        name = f"{size}-crop{border_crop:g}" if border_crop else f"{size}"
        self.data_path = self.directory / f"images-{name}.u8"
        self.index_path = self.directory / f"index-{name}.json"
        self.lock_path = self.directory / f"images-{name}.lock"
        self.hasher = FileHasher(self.directory / "file-hashes.json")
        self._array: np.memmap | None = None

    def _read_index(self) -> dict[str, int]:
        if not self.index_path.is_file():
            return {}
        try:
            payload = json.loads(self.index_path.read_text())
        except ValueError:
            return {}  # a damaged index only costs decoding again: the data file is rewritten from row 0
        if payload.get("version") != INDEX_VERSION or payload.get("size") != self.size:
            return {}
        return payload["rows"]

    def add(
        self, paths: Sequence[Path], progress: bool = True, digests: Sequence[str] | None = None
    ) -> tuple[list[int], list[UnreadableImageError]]:
        """Make sure every file is cached; return its row (-1 when unreadable) and the decoding errors.

        ``digests`` (from :meth:`digests`) spares hashing the files a second time when the caller has them.
        """
        if digests is None:
            digests = self.digests(paths)
        errors: list[UnreadableImageError] = []
        with locked(self.lock_path):
            rows = self._read_index()
            missing = {d: p for d, p in zip(digests, paths, strict=True) if d not in rows}
            if missing:
                row_bytes = self.size * self.size
                next_row = max(rows.values(), default=-1) + 1
                with open(self.data_path, "ab") as stream:
                    # Drop bytes a killed run appended after the last indexed row.
                    stream.truncate(next_row * row_bytes)
                    for digest, path in tqdm(
                        missing.items(), desc=f"decoding to {self.size}px cache", disable=not progress, unit="img"
                    ):
                        try:
                            pixels = load_for_model(path, self.size, self.border_crop)
                        except UnreadableImageError as error:
                            errors.append(error)
                            continue
                        stream.write(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
                        rows[digest] = next_row
                        next_row += 1
                    stream.flush()
                    os.fsync(stream.fileno())
                atomic_write_json(self.index_path, {"version": INDEX_VERSION, "size": self.size, "rows": rows})
                self._array = None
        return [rows.get(d, -1) for d in digests], errors

    def digests(self, paths: Sequence[Path]) -> list[str]:
        result = [self.hasher.digest(p) for p in paths]
        self.hasher.save()
        return result

    def row(self, index: int) -> np.ndarray:
        """One decoded image; the memory map is opened lazily, once per process (data-loader worker)."""
        if self._array is None or index >= len(self._array):  # (re)open when another cache object appended
            count = os.path.getsize(self.data_path) // (self.size * self.size)
            self._array = np.memmap(self.data_path, dtype=np.uint8, mode="r", shape=(count, self.size, self.size))
        return self._array[index]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None  # workers open their own map instead of pickling pixels
        return state

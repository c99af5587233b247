"""Safe file writing and content hashing, used by every module that stores something.

A killed run must never leave a half-written checkpoint, split or cache index behind: everything is
written to a temporary file in the same folder, flushed, then renamed over the target (atomic on POSIX;
``os.replace`` on Windows). Nothing here is POSIX- or 3.11-only: the package must import on Windows and 3.10.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

from cxrdistill.errors import CxrDistillError

READ_CHUNK_BYTES = 1 << 20
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class DiskFullError(CxrDistillError, OSError):
    """No space left (or over quota) while writing a file; the file's previous version is untouched."""


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a temporary file, then rename it to ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            full = DiskFullError(f"no space left on the device (or over quota) while writing {path}; free some "
                                 f"space and run the command again (the previous version of {path.name}, if any, "
                                 f"is intact)")
            full.errno = error.errno
            raise full from error
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda stream: stream.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=False) + "\n")


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks (``hashlib.file_digest`` needs Python 3.11)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def text_digest(*parts: object) -> str:
    """A short stable hash of some values, for cache keys that must change when any input changes."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """An exclusive lock on the file ``path``, so two runs sharing a cache do not write it at the same time.

    ``filelock`` uses ``flock`` on POSIX and ``msvcrt`` locking on Windows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield

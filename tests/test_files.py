"""Safe writes, hashing and locking in ``cxrdistill.files``: atomic on failure, portable beyond POSIX and 3.11."""

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import cxrdistill.files
from cxrdistill.files import atomic_write, file_digest, locked


def fresh_copy_of_files_module():
    """Import ``cxrdistill/files.py`` again under another name (what a fresh interpreter would do)."""
    spec = importlib.util.spec_from_file_location("files_fresh_copy", cxrdistill.files.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")

    def write_half_then_fail(stream):
        stream.write(b"new, but only half of i")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, write_half_then_fail)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_imports_without_fcntl_as_on_windows(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "fcntl", None)  # makes `import fcntl` raise ImportError
    module = fresh_copy_of_files_module()
    with module.locked(tmp_path / "cache.lock"):
        (tmp_path / "inside").write_text("ok")
    assert (tmp_path / "inside").read_text() == "ok"


def test_file_digest_without_hashlib_file_digest_as_on_python_310(monkeypatch, tmp_path):
    monkeypatch.delattr(hashlib, "file_digest", raising=False)
    path = tmp_path / "blob.bin"
    content = bytes(range(256)) * 5000  # more than one read chunk
    path.write_bytes(content)
    assert file_digest(path) == hashlib.sha256(content).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(content).hexdigest()


def test_lock_excludes_another_process(tmp_path):
    lock_path = tmp_path / "cache.lock"
    try_lock = "import sys, filelock; filelock.FileLock(sys.argv[1]).acquire(timeout=0.2)"
    with locked(lock_path):
        held = subprocess.run([sys.executable, "-c", try_lock, str(lock_path)], capture_output=True, text=True)
    assert held.returncode != 0 and "Timeout" in held.stderr
    free = subprocess.run([sys.executable, "-c", try_lock, str(lock_path)], capture_output=True, text=True)
    assert free.returncode == 0, free.stderr


def test_locked_creates_the_lock_folder(tmp_path):
    with locked(tmp_path / "new" / "folder" / "index.lock"):
        pass
    assert Path(tmp_path / "new" / "folder").is_dir()

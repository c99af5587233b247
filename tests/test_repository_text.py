"""Every tracked text file speaks to the project's users: no path of one machine, no words of its makers' process.

A path that starts at the root of one computer (its home, temp or workspace folder) in a README, a config or
a committed result is true on one computer only and tells every other reader nothing; commands and results
are written relative to the repository root.
Internal references (ticket numbers, work branches) mean nothing to someone who installed the package.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MACHINE_PATH = re.compile(r"(?<![\w.~$%-])/(?:work|root|tmp)/|(?<![\w.~$%-])/home\/[a-z_][\w-]*/")
"""An absolute workspace, home or temp path (the folders named in the pattern above, or a user's home);
the look-behind leaves URLs and relative paths (``../shared/...``) alone."""

PROCESS_WORDS = re.compile(
    r"\bissue[- ]?#?\d+|\bthe issue'?s\b|\bhelper(?:'s)? (?:branch|worktree|session)|\bthe lead'?s\b"
    r"|\b(?:this project's|earlier|later|next|that) sessions?\b|\bcoordinator\b|\bthis worktree\b",
    re.IGNORECASE,
)
"""Words that only make sense inside the team that wrote the code (ticket numbers, work branches, sessions)."""

OWN_FILE = Path(__file__).relative_to(ROOT).as_posix()


def tracked_text_files() -> dict[str, list[str]]:
    """Each tracked file's lines, binaries (a NUL byte or not UTF-8) left out."""
    try:
        listing = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True,
                                 timeout=60).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: no list of tracked files")
    files = {}
    for name in filter(None, listing.split("\0")):
        path = ROOT / name
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            files[name] = data.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            continue
    return files


def hits(pattern: re.Pattern[str], files: dict[str, list[str]]) -> list[str]:
    """``file:line: text`` for every line the pattern matches."""
    return [f"{name}:{number}: {line.strip()[:160]}" for name, lines in files.items()
            for number, line in enumerate(lines, 1) if pattern.search(line)]


@pytest.fixture(scope="module")
def files() -> dict[str, list[str]]:
    return tracked_text_files()


def test_patterns_catch_what_they_are_for() -> None:
    # The paths are put together here so that this file itself names no machine path.
    absolute = ["/" + "/".join(parts) for parts in (("work", "shared", "data"), ("root", ".pyenv"),
                                                     ("tmp", "run1"), ("home", "ana", "x"))]
    for text in (f"data.root={absolute[0]}", f"see {absolute[1]}/versions", f"--out {absolute[2]}", absolute[3]):
        assert MACHINE_PATH.search(text), text
    for text in ("../shared/data/chest_xray_224", "https://example.org/" + "tmp/x", "runs/" + "tmp/a", "~/" + "work/x"):
        assert not MACHINE_PATH.search(text), text
    for text in ("the study of issue 8", "Issue-8 pilot", "the issue's targets", "helper branch commit 2b7694d",
                 "in an earlier session", "the lead's run", "Command (from this worktree):"):
        assert PROCESS_WORDS.search(text), text
    for text in ("an ONNX Runtime session", "every helper here is a no-op", "a known issue with PIL"):
        assert not PROCESS_WORDS.search(text), text


def test_no_machine_paths_in_tracked_files(files: dict[str, list[str]]) -> None:
    found = hits(MACHINE_PATH, {name: lines for name, lines in files.items() if name != OWN_FILE})
    assert not found, "absolute machine paths (write them relative to the repository root):\n" + "\n".join(found)


def test_no_team_process_words_outside_tests(files: dict[str, list[str]]) -> None:
    found = hits(PROCESS_WORDS, {name: lines for name, lines in files.items() if not name.startswith("tests/")})
    assert not found, "words of the team's process in the product:\n" + "\n".join(found)

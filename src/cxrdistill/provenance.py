"""Where a result came from: the command, the resolved config, the code's git commit, the machine and the versions.

A timing or a metric without these cannot be checked or compared later: a number measured at an older
commit, on another CPU or with another torch looks exactly like a current one. Every result file the
project commits (benchmarks, comparisons, sweeps) carries ``provenance(...)`` beside its numbers.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy
import PIL
import torch
import torchvision

import cxrdistill

SOURCE_ROOT = Path(cxrdistill.__file__).resolve().parents[2]
"""The checkout holding the imported cxrdistill sources (``src/cxrdistill`` two levels down)."""


def provenance(command: Sequence[str] | None = None, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record to store beside a result: command, config, git state, date, machine and versions.

    ``command`` defaults to this process's ``sys.argv``; ``config`` is the resolved configuration (for
    an experiment ``ExperimentConfig.to_dict()``, for a benchmark its settings) and is stored as JSON data.
    Paths in both are written as :func:`portable_paths` gives them, so a committed record names no machine.
    """
    words = [Path(sys.executable).name, *(sys.argv if command is None else command)]
    return {
        "command": portable_paths(shlex.join(words)),
        "config": _portable(json.loads(json.dumps(config, default=str))) if config is not None else None,
        "git": git_state(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "versions": package_versions(),
    }


def portable_paths(text: str) -> str:
    """``text`` with this machine's absolute places written as any reader can follow them.

    Under the working directory a path becomes relative to it (``benchmarks/results``), beside it relative
    to its parent (``../shared/data``, data kept next to the checkout); the temp folder is written
    ``$TMPDIR`` and the home folder ``~``. Results are committed and read on other machines, where the
    absolute path of the one that made them means nothing.
    """
    cwd = Path.cwd()
    # Later keys win where two places coincide (a checkout in the home folder): the nearest name is kept.
    places = {str(Path.home()): "~", tempfile.gettempdir(): "$TMPDIR", str(cwd.parent): "..", str(cwd): "."}
    for prefix, name in sorted(places.items(), key=lambda item: -len(item[0])):
        if Path(prefix) == Path(prefix).parent:  # the file system's root: every path would match
            continue
        start = rf"(?<![\w.~$/-]){re.escape(prefix.rstrip('/'))}"
        text = re.sub(start + r"/", "" if name == "." else name + "/", text)
        text = re.sub(start + r"(?![\w.-])", name, text)
    return text


def _portable(value: Any) -> Any:
    """:func:`portable_paths` over every string of JSON data."""
    if isinstance(value, str):
        return portable_paths(value)
    if isinstance(value, list):
        return [_portable(item) for item in value]
    if isinstance(value, dict):
        return {key: _portable(item) for key, item in value.items()}
    return value


RESULT_PATHS = ("benchmarks/results",)
"""Committed result files, rewritten by the very runs that record provenance: not a change to the code."""


def git_state(root: Path = SOURCE_ROOT) -> dict[str, Any] | None:
    """The commit of the code that ran and the tracked files that differed from it; None outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("diff", "HEAD", "--name-only", "--", ".", *(f":(exclude){path}" for path in RESULT_PATHS))
    except (OSError, subprocess.SubprocessError):
        return None
    files = changed.splitlines()
    return {"commit": commit, "dirty": bool(files), "changed": files}


def package_versions() -> dict[str, str]:
    """Versions of what shapes the numbers; cxrdistill's is the imported code's, not an installed copy's."""
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "Pillow": PIL.__version__, "numpy": numpy.__version__,
            "cxrdistill": cxrdistill.__version__, "scikit-learn": _installed_version("scikit-learn")}


def describe_machine() -> dict[str, Any]:
    """The facts a timing needs beside it: CPU model, cores, memory, GPUs (an empty list: none), load and date."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": total_memory_gb(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def cpu_name() -> str:
    """The CPU's marketing name: timings mean little without it (``platform.processor()`` is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 1e9, 1)
    except OSError:
        pass
    return None


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None

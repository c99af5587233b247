"""``provenance``: every committed result names the code, config, machine and versions it came from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy
import PIL
import torch
import torchvision

import cxrdistill
from cxrdistill.provenance import SOURCE_ROOT, git_state, portable_paths, provenance


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_provenance_names_commit_config_machine_and_versions() -> None:
    record = provenance(["benchmarks/bench_x.py", "--threads", "1"], {"root": Path("/data"), "epochs": 3})
    assert record["command"].endswith("benchmarks/bench_x.py --threads 1")
    assert record["config"] == {"root": "/data", "epochs": 3}
    assert record["git"]["commit"] == git(SOURCE_ROOT, "rev-parse", "HEAD")
    assert record["versions"] == {
        "python": record["machine"]["python"], "torch": torch.__version__, "torchvision": torchvision.__version__,
        "Pillow": PIL.__version__, "numpy": numpy.__version__, "cxrdistill": cxrdistill.__version__,
        "scikit-learn": record["versions"]["scikit-learn"],
    }
    machine = record["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["memory_gb"] > 0
    assert machine["gpus"] == ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                               if torch.cuda.is_available() else [])
    assert record["date"] and json.loads(json.dumps(record)) == record


def test_git_state_flags_changed_code_but_not_rewritten_results(tmp_path: Path) -> None:
    """Benchmarks rewrite committed result files as they go; only changed code makes a result 'dirty'."""
    assert git_state(tmp_path) is None  # not a checkout
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "bench.json").write_text("{}\n")
    git(tmp_path, "add", "code.py", "benchmarks/results/bench.json")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "first")
    clean = {"commit": git(tmp_path, "rev-parse", "HEAD"), "dirty": False, "changed": []}
    assert git_state(tmp_path) == clean
    (tmp_path / "benchmarks" / "results" / "bench.json").write_text('{"ratio": 2}\n')
    assert git_state(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path) == {**clean, "dirty": True, "changed": ["code.py"]}


def test_provenance_writes_paths_any_machine_can_read(tmp_path: Path, monkeypatch) -> None:
    """A committed record names no machine: the interpreter by name, paths relative to the working folder."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    shared = tmp_path / "shared" / "data"
    record = provenance(["benchmarks/bench_x.py", f"--results-dir={checkout}/benchmarks/results",
                         f"data.root={shared}", "--out", str(checkout)],
                        {"root": shared, "runs": [checkout / "runs" / "a"], "home": Path.home() / "x", "n": 3})
    assert record["command"] == (f"{Path(sys.executable).name} benchmarks/bench_x.py "
                                 "--results-dir=benchmarks/results data.root=../shared/data --out .")
    assert record["config"] == {"root": "../shared/data", "runs": ["runs/a"], "home": "~/x", "n": 3}
    # A sibling whose name starts like the checkout's is not taken for the checkout.
    assert portable_paths(f"{checkout}-old/x,{checkout}") == "../checkout-old/x,."

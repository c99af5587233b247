"""Smoke test of the benchmark scripts: each ``main`` runs in ``--quick`` mode and writes its JSON result.

Only the plumbing is checked (result file, machine description, command, ratios and verdicts); quick
runs are far too small for their numbers to mean anything.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Benchmarks import ``_common`` from their own folder; one torch thread keeps shared machines sane."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def check_result(path: Path, name: str) -> dict:
    record = json.loads(path.read_text())
    assert record["benchmark"] == name and record["quick"] is True
    assert record["machine"]["cpu"] and record["machine"]["cores"] >= 1 and record["machine"]["torch"]
    assert record["machine"]["date"] and f"benchmarks/{name}.py" in record["command"]
    for verdict in record["targets"].values():
        assert verdict["ratio"] > 0 and isinstance(verdict["met"], bool)
    return record


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "extra"),
    [("bench_data", ["--fixtures-dir", "{tmp}/fixtures"]), ("bench_distill", []), ("bench_trainer", []),
     ("bench_teacher_student", [])],
)
def test_benchmark_quick(name: str, extra: list[str], tmp_path: Path) -> None:
    argv = ["--quick", "--threads", "1", "--results-dir", str(tmp_path), *(a.format(tmp=tmp_path) for a in extra)]
    payload = load(name).main(argv)
    record = check_result(tmp_path / f"{name}.json", name)
    assert record["ratios"] == json.loads(json.dumps(payload["ratios"]))
    assert all(value > 0 for value in record["ratios"].values())


@pytest.mark.slow
def test_gpu_profile_cpu_smoke(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    load("gpu_profile").main(["--device", "cpu", "--quick", "--amp", "off", "--results-dir", str(tmp_path)])
    record = json.loads((tmp_path / "gpu_profile.json").read_text())
    assert set(record["profiles"]) == {"inception_v3/amp=off", "alexnet/amp=off"}
    assert record["profiles"]["alexnet/amp=off"]["train_images_per_s"] > 0
    assert record["ratios_teacher_vs_student"]["amp=off"]["gflops"] > 1

"""Smoke test of the benchmark scripts: each ``main`` runs in ``--quick`` mode and writes its JSON result.

Only the plumbing is checked (result file, machine description, command, ratios and verdicts); quick
runs are far too small for their numbers to mean anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import BENCHMARKS, load_benchmark
from PIL import Image


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Benchmarks import ``_common`` from their own folder; one torch thread keeps shared machines sane."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def check_result(path: Path, name: str) -> dict:
    """The plumbing every result shares: provenance, verdicts, and ratios with their interval over rounds."""
    record = json.loads(path.read_text())
    assert record["benchmark"] == name and record["quick"] is True
    machine = record["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["memory_gb"] and isinstance(machine["gpus"], list)
    assert record["date"] and record["git"]["commit"] and f"benchmarks/{name}.py" in record["command"]
    assert {"python", "torch", "torchvision", "Pillow", "numpy", "cxrdistill"} <= set(record["versions"])
    assert record["config"]["arguments"]["quick"] is True
    for verdict in record["targets"].values():
        assert verdict["ratio"] > 0 and isinstance(verdict["met"], bool)
    for ratio in record["ratios"].values():
        if not isinstance(ratio, dict):  # a single measured ratio (bench_teacher_student's profiles)
            assert ratio > 0
            continue
        assert ratio["mean"] > 0 and len(ratio["per_round"]) == ratio["rounds"]
        if ratio["rounds"] > 1:
            assert ratio["low"] <= ratio["mean"] <= ratio["high"]
    return record


def make_224_px_folder(root: Path, per_class: int = 3) -> Path:
    """A few 224x224 RGB JPEGs in ``ROOT/{NORMAL,PNEUMONIA}``, like the shared re-encoded Kermany copy."""
    generator = torch.Generator().manual_seed(0)
    for label in ("NORMAL", "PNEUMONIA"):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            grey = torch.randint(0, 256, (224, 224), generator=generator, dtype=torch.uint8)
            Image.fromarray(grey.expand(3, -1, -1).permute(1, 2, 0).numpy(), mode="RGB").save(
                root / label / f"person{index}_{label.lower()}_{index}.jpeg")
    return root


def check_data(module: ModuleType, payload: dict) -> None:
    """The cache is compared with the naive RGB recipe and with a careful grey loader, on large and 224-px files."""
    for case in ("synthetic_full_size", "real_224"):
        for baseline in ("naive_rgb", "careful_grey"):
            assert {f"{case}/warm_vs_{baseline}", f"{case}/cold_vs_{baseline}"} <= set(payload["ratios"])
    assert all(ratio["rounds"] >= 2 for ratio in payload["ratios"].values())


def check_trainer(module: ModuleType, payload: dict) -> None:
    """A switch is kept only when the lower end of its interval over rounds clears the cut-off."""
    measured = [name for name in payload["recommendations"] if f"{name}_vs_default" in payload["ratios"]]
    assert measured
    for name in measured:
        ratio = payload["ratios"][f"{name}_vs_default"]
        assert ratio["rounds"] >= 2
        assert payload["recommendations"][name].startswith("keep") == (ratio["low"] >= module.KEEP_THRESHOLD)


def check_distill(module: ModuleType, payload: dict) -> None:
    """Both set-ups (reduced 96-px teacher, paper-sized teacher and student) with the teacher-cache set-up time."""
    for case in ("reduced", "paper_size"):
        assert {f"{case}/cached_vs_plain", f"{case}/online_vs_plain"} <= set(payload["ratios"])
        assert payload["measurements"][case]["teacher_cache_setup_seconds"] > 0


CHECKS = {"bench_data": check_data, "bench_trainer": check_trainer, "bench_distill": check_distill}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "extra"),
    [("bench_data", ["--fixtures-dir", "{tmp}/fixtures", "--real-224-root", "{tmp}/real-224"]),
     ("bench_distill", []), ("bench_trainer", []), ("bench_teacher_student", [])],
)
def test_benchmark_quick(name: str, extra: list[str], tmp_path: Path) -> None:
    make_224_px_folder(tmp_path / "real-224")
    argv = ["--quick", "--threads", "1", "--results-dir", str(tmp_path), *(a.format(tmp=tmp_path) for a in extra)]
    module = load_benchmark(name)
    payload = module.main(argv)
    record = check_result(tmp_path / f"{name}.json", name)
    assert record["ratios"] == json.loads(json.dumps(payload["ratios"]))
    CHECKS.get(name, lambda *_: None)(module, payload)


@pytest.mark.slow
def test_bench_bootstrap_quick(tmp_path: Path) -> None:
    """The vectorised AUC is checked against scikit-learn inside the run, and is faster in every round."""
    payload = load_benchmark("bench_bootstrap").main(["--quick", "--results-dir", str(tmp_path)])
    record = check_result(tmp_path / "bench_bootstrap.json", "bench_bootstrap")
    assert all(ratio > 1 for ratio in record["ratios"]["vectorised_vs_per_resample"]["per_round"])
    assert len(payload["seconds"]["vectorised"]) == 2


def test_gpu_profile_cpu_smoke(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    load_benchmark("gpu_profile").main(["--device", "cpu", "--quick", "--amp", "off", "--results-dir", str(tmp_path)])
    record = json.loads((tmp_path / "gpu_profile.json").read_text())
    assert record["git"]["commit"] and record["versions"]["torch"] and record["config"]["batch_size"] == 4
    assert set(record["profiles"]) == {"inception_v3/amp=off", "alexnet/amp=off"}
    assert record["profiles"]["alexnet/amp=off"]["train_images_per_s"] > 0
    assert record["ratios_teacher_vs_student"]["amp=off"]["gflops"] > 1


@pytest.mark.slow
def test_bench_deterministic_quick(tmp_path: Path) -> None:
    load_benchmark("bench_deterministic").main(["--quick", "--threads", "1", "--results-dir", str(tmp_path)])
    record = json.loads((tmp_path / "bench_deterministic.json").read_text())
    assert record["git"]["commit"] and "torch" in record["versions"]
    assert record["deterministic_over_default"] > 0 and record["identical_weights"] is True


@pytest.mark.slow
def test_bench_user_script_quick(synth_root: Path, tmp_path: Path) -> None:
    load_benchmark("bench_user_script").main([
        "--quick", "--threads", "1", "--results-dir", str(tmp_path), "--data", str(synth_root),
        "--external", str(synth_root / "test"), "--size", "64",
        "--recipe", "cpu/robust/student",
        f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=0", "data.image_size=64",
    ])
    record = json.loads((tmp_path / "bench_user_script.json").read_text())
    [run] = record["runs"]
    assert set(run["metrics"]) == {"internal test", "external test"}
    assert 0 <= run["metrics"]["external test"]["accuracy"]["value"] <= 1 and run["images_per_s"][0] > 0
    assert record["speed"]["project_over_user"] > 0


@pytest.mark.slow
def test_bench_ddp_quick(tmp_path: Path) -> None:
    """One launch of 1 and of 2 gloo processes; images/s counts every process's images."""
    payload = load_benchmark("bench_ddp").main(["--quick", "--threads", "1", "--results-dir", str(tmp_path)])
    record = check_result(tmp_path / "bench_ddp.json", "bench_ddp")
    assert set(record["images_per_s"]) == {"1", "2"} and all(v[0] > 0 for v in record["images_per_s"].values())
    assert record["ratios"]["two_vs_one_process"]["mean"] == pytest.approx(
        record["images_per_s"]["2"][0] / record["images_per_s"]["1"][0])
    assert payload["targets"]["two_vs_one_process"]["target"] == ">= 1.5"


@pytest.mark.slow  # a whole benchmark end to end: tens of seconds
def test_bench_deploy_quick(tmp_path: Path) -> None:
    """Every runtime of the slim student, the int8 variant and the other thread count, each against eager fp32."""
    payload = load_benchmark("bench_deploy").main(["--quick", "--threads", "1", "--results-dir", str(tmp_path)])
    record = check_result(tmp_path / "bench_deploy.json", "bench_deploy")
    runtimes = {row["runtime"] for row in record["table"]}
    assert {"torch_fp32", "onnx_fp32", "onnx_int8", "onnx_int8_fp32_first_conv", "onnx_int8_2t"} <= runtimes
    assert "mobilenet_v3_small/onnx_int8/latency_speedup_vs_torch_fp32" in payload["ratios"]
    files = record["measurements"]["file_mb"]["mobilenet_v3_small"]
    assert files["onnx_int8"] < files["onnx_fp32"]
    assert record["targets"]["student_int8_file_vs_fp32"]["ratio"] == pytest.approx(
        files["onnx_int8"] / files["onnx_fp32"], rel=1e-3)
    for name in ("torch_fp32", "onnx_fp32", "onnx_int8"):
        assert record["measurements"]["peak_memory"][f"mobilenet_v3_small/{name}"]["rise_mb"] > 0


@pytest.mark.slow  # a whole benchmark end to end: tens of seconds
def test_bench_service_load_quick(tmp_path: Path) -> None:
    """A few seconds against a real ``cxrdistill serve``: every kind sent, each answered as expected, no 5xx."""
    pytest.importorskip("fastapi", reason="the service is the optional 'serve' extra")
    pytest.importorskip("httpx")
    payload = load_benchmark("bench_service_load").main(["--quick", "--results-dir", str(tmp_path)])
    record = json.loads((tmp_path / "service_load.json").read_text())
    assert record["benchmark"] == "service_load" and record["quick"] is True and record["git"]["commit"]
    assert record["machine"]["cores"] >= 1 and "bench_service_load.py" in record["command"]
    assert payload["passed"] is True and payload["requests"] > 0 and payload["requests_per_s"] > 0
    phases = record["all_phases"]
    assert phases["overall"]["server_errors_5xx"] == 0 and phases["overall"]["unexpected"] == 0
    assert set(phases["per_kind"]) == set(record["config"]["kinds"]) and len(phases["per_kind"]) >= 12
    assert all(row["requests"] > 0 for row in phases["per_kind"].values())
    assert record["failures"]["marker_files"] == [] and record["failures"]["server_tracebacks"] == 0
    memory = record["server_rss"]
    assert memory["start_mb"] > 0 and memory["samples_mb"] and record["latency"]["overall"]["p99_ms"] > 0

"""Tests for cxrdistill.deployment.profile: fields, FLOPs, sizes, targets and ratios (never timings' values)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from rich.console import Console

from cxrdistill.config import ExperimentConfig, ModelConfig
from cxrdistill.deployment.profile import (
    METRICS,
    ResourceProfile,
    compare_profiles,
    format_table,
    profile_model,
)
from cxrdistill.models import create_model
from cxrdistill.models.summary import count_flops
from cxrdistill.runtime.checkpoint import checkpoint_metadata, save_checkpoint

SMALL = {"batch_size": 4, "repeats": 2, "train_steps": 2, "batches": 1, "warmup": 1, "device": "cpu"}
ALWAYS_POSITIVE = ("params", "gflops", "gmacs", "serialized_mb", "latency_ms_median", "latency_ms_p90",
                   "inference_images_per_s", "train_images_per_s", "rss_baseline_mb", "peak_rss_inference_mb",
                   "peak_rss_train_mb", "cpu_ms_per_image_inference", "cpu_ms_per_image_train")


@pytest.fixture(scope="module")
def alexnet() -> ResourceProfile:
    return profile_model("alexnet", input_size=64, isolate=False, **SMALL)


@pytest.fixture(scope="module")
def inception() -> ResourceProfile:
    """Isolated: also checks the measurement runs in a spawned process and comes back whole."""
    return profile_model("inception_v3", input_size=80, isolate=True, **SMALL)


def _params_and_flops(name: str, size: int) -> tuple[int, int]:
    model = create_model(ModelConfig(name=name), image_size=size)
    return sum(p.numel() for p in model.parameters()), count_flops(model, size)


@pytest.mark.parametrize("which", ["alexnet", "inception"])
def test_fields_present_and_positive(which: str, request: pytest.FixtureRequest) -> None:
    profile: ResourceProfile = request.getfixturevalue(which)
    for name in ALWAYS_POSITIVE:
        assert getattr(profile, name) > 0, name
    assert profile.rss_increase_mb is not None
    assert profile.latency_ms_p90 >= profile.latency_ms_median
    assert profile.device == "cpu" and profile.device_name and profile.cores >= 1 and profile.torch_version
    assert profile.precision == "float32"
    # No CUDA figures on the CPU.
    assert profile.cuda_train_allocated_mb is None and profile.gpu_util_mean is None
    assert set(profile.as_dict()) == {f.name for f in dataclasses.fields(ResourceProfile)}


@pytest.mark.parametrize(("which", "name", "size"), [("alexnet", "alexnet", 64), ("inception", "inception_v3", 80)])
def test_flops_params_and_size(which: str, name: str, size: int, request: pytest.FixtureRequest) -> None:
    profile: ResourceProfile = request.getfixturevalue(which)
    params, flops = _params_and_flops(name, size)
    assert (profile.model, profile.input_size, profile.source) == (name, size, "registry")
    assert profile.params == params
    assert profile.gflops == pytest.approx(flops / 1e9)
    assert profile.gmacs == pytest.approx(profile.gflops / 2)
    # float32 weights: 4 bytes a parameter, plus BatchNorm statistics and pickle framing.
    assert profile.serialized_mb == pytest.approx(4 * params / 1e6, rel=0.02)


def test_isolated_profile_reports_its_memory_scope(inception: ResourceProfile, alexnet: ResourceProfile) -> None:
    assert "fresh spawned process" in inception.memory_scope
    assert "this process" in alexnet.memory_scope
    # Training holds gradients and momentum beside the weights.
    assert inception.peak_rss_train_mb >= inception.rss_baseline_mb


def test_checkpoint_target(tmp_path: Path) -> None:
    config = ExperimentConfig()
    config.model.name = "resnet18"
    model = create_model(config.model, image_size=64)
    path = save_checkpoint(tmp_path / "resnet18.pt", model, checkpoint_metadata(config, 64))
    profile = profile_model(str(path), isolate=False, **SMALL)
    assert (profile.model, profile.source, profile.input_size) == ("resnet18", str(path), 64)
    assert profile.params == sum(p.numel() for p in model.parameters())
    assert profile.train_images_per_s > 0


def test_unknown_target_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"'no_such_net' is neither an existing checkpoint.*known models: .*alexnet"):
        profile_model("no_such_net")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="train_steps must be at least 1"):
        profile_model("alexnet", train_steps=0)


def test_compare_profiles_divides_first_by_second(alexnet: ResourceProfile) -> None:
    teacher = dataclasses.replace(alexnet, model="teacher", params=300, latency_ms_median=9.0,
                                  train_images_per_s=10.0, peak_rss_train_mb=800.0)
    student = dataclasses.replace(alexnet, model="student", params=100, latency_ms_median=3.0,
                                  train_images_per_s=40.0, peak_rss_train_mb=200.0)
    ratios = compare_profiles(teacher, student)
    assert ratios["params"] == pytest.approx(3.0)
    assert ratios["latency_ms_median"] == pytest.approx(3.0)
    assert ratios["train_images_per_s"] == pytest.approx(0.25)
    assert ratios["peak_rss_train_mb"] == pytest.approx(4.0)
    assert ratios["gflops"] == pytest.approx(1.0)
    # CUDA-only quantities are absent on the CPU rather than divided.
    assert "gpu_util_mean" not in ratios and "cuda_train_allocated_mb" not in ratios
    assert set(ratios) <= {name for name, _, _ in METRICS}


def test_format_table_renders(alexnet: ResourceProfile, inception: ResourceProfile) -> None:
    console = Console(record=True, width=160)
    console.print(format_table([inception, alexnet]))
    text = console.export_text()
    assert "inception_v3 / alexnet" in text and "GFLOPs / image" in text and "latency" in text
    assert "GPU utilisation" not in text  # rows with no value on any model are left out

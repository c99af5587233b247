"""Resource profiles of a model: size, FLOPs, latency, throughput, memory and, on CUDA, GPU utilisation.

They put numbers on the teacher/student trade-off that motivates distillation for weak hardware (the
source paper's Table V reports GPU memory and utilisation while training). What is measured, and how:

* Inputs are random tensors made on the device beforehand, so the figures describe the model, not the
  data pipeline (``benchmarks/bench_data.py`` measures that).
* Latency: batch 1, eval mode, ``torch.inference_mode``, each call timed on its own after warm-up
  (CUDA is synchronised around each call); median and 90th percentile over ``repeats`` calls.
* Inference throughput: ``batches`` batches of ``batch_size`` timed as one region.
* Training throughput: SGD steps with cross-entropy (plus InceptionV3's auxiliary head, as the trainer
  does) in train mode. CUDA is synchronised only before and after the timed loop, never per step.
* CPU memory: the peak resident size of the process, its peak mark reset at the start of each phase and
  read at its end, so inference and training peaks are each their own (Linux; elsewhere the process peak).
  By default (``isolate=True``) the profile runs in a fresh spawned process, so memory freed by an earlier
  model in the caller cannot linger in the figures. The increase of the higher peak over the resident size
  before the model was built is reported too; ``memory_scope`` says which method applied. How:
  :mod:`cxrdistill.runtime.resources`.
* CPU time: process user + system time (all threads) per image, for inference and training.
* CUDA memory: ``torch.cuda.max_memory_allocated`` (tensors) for inference and training separately, the
  caching allocator's peak reserve while training, and NVML's device-wide memory in use (CUDA context
  included, as ``nvidia-smi`` shows it).
* GPU utilisation: NVML, sampled every 50 ms during the timed training steps (``runtime.resources.GpuSampler``).

Sizes are in MB of 10^6 bytes.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table
from torch import nn

from cxrdistill.config import ModelConfig
from cxrdistill.errors import InvalidArgumentError
from cxrdistill.models import MODELS, create_model, input_size
from cxrdistill.models.summary import count_flops
from cxrdistill.provenance import cpu_name
from cxrdistill.runtime.checkpoint import model_from_checkpoint
from cxrdistill.runtime.device import Precision, resolve_device, resolve_precision
from cxrdistill.runtime.resources import (
    MB,
    GpuSampler,
    current_rss_mb,
    peak_rss_mb,
    reset_peak_rss,
    run_in_fresh_process,
)
from cxrdistill.training.objectives import SupervisedObjective

TRAIN_LR = 1e-3
"""Small enough that a few steps on random inputs stay finite (the cost, not the result, is measured)."""


@dataclass(frozen=True)
class ResourceProfile:
    """What one model costs on one device; fields that do not apply to the device are ``None``."""

    model: str
    source: str
    """``registry`` or the checkpoint path the model was rebuilt from."""
    device: str
    device_name: str
    cores: int
    threads: int
    torch_version: str
    precision: str
    input_size: int
    batch_size: int
    repeats: int
    batches: int
    train_steps: int
    params: int
    gflops: float
    gmacs: float
    serialized_mb: float
    latency_ms_median: float
    latency_ms_p90: float
    inference_images_per_s: float
    train_images_per_s: float
    memory_scope: str
    rss_baseline_mb: float | None = None
    peak_rss_inference_mb: float | None = None
    peak_rss_train_mb: float | None = None
    rss_increase_mb: float | None = None
    cpu_ms_per_image_inference: float | None = None
    cpu_ms_per_image_train: float | None = None
    cuda_inference_allocated_mb: float | None = None
    cuda_train_allocated_mb: float | None = None
    cuda_train_reserved_mb: float | None = None
    gpu_memory_used_max_mb: float | None = None
    gpu_util_mean: float | None = None
    gpu_util_max: float | None = None
    gpu_util_samples: int | None = None
    gpu_util_note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


METRICS: tuple[tuple[str, str, str], ...] = (
    ("input_size", "input size (px)", "{:.0f}"),
    ("params", "parameters (M)", "m"),
    ("gflops", "GFLOPs / image", "{:.3f}"),
    ("gmacs", "GMACs / image", "{:.3f}"),
    ("serialized_mb", "state_dict size (MB)", "{:.1f}"),
    ("latency_ms_median", "latency batch 1, median (ms)", "{:.2f}"),
    ("latency_ms_p90", "latency batch 1, p90 (ms)", "{:.2f}"),
    ("inference_images_per_s", "inference (images/s)", "{:.1f}"),
    ("train_images_per_s", "training (images/s)", "{:.1f}"),
    ("peak_rss_inference_mb", "peak RSS, inference (MB)", "{:.0f}"),
    ("peak_rss_train_mb", "peak RSS, training (MB)", "{:.0f}"),
    ("rss_increase_mb", "RSS increase during profile (MB)", "{:.0f}"),
    ("cpu_ms_per_image_inference", "CPU time / image, inference (ms)", "{:.2f}"),
    ("cpu_ms_per_image_train", "CPU time / image, training (ms)", "{:.2f}"),
    ("cuda_inference_allocated_mb", "CUDA peak allocated, inference (MB)", "{:.0f}"),
    ("cuda_train_allocated_mb", "CUDA peak allocated, training (MB)", "{:.0f}"),
    ("cuda_train_reserved_mb", "CUDA peak reserved, training (MB)", "{:.0f}"),
    ("gpu_memory_used_max_mb", "GPU memory in use, NVML max (MB)", "{:.0f}"),
    ("gpu_util_mean", "GPU utilisation, mean (%)", "{:.1f}"),
    ("gpu_util_max", "GPU utilisation, max (%)", "{:.0f}"),
)
"""Measured quantities: (field, label, format) for the table; ``compare_profiles`` divides these."""


@dataclass(frozen=True)
class _Request:
    """Everything the measuring process needs; plain data so it pickles into a spawned process."""

    target: str
    from_checkpoint: bool
    device: str
    amp: str
    batch_size: int
    input_size: int | None
    repeats: int
    batches: int
    train_steps: int
    warmup: int
    threads: int
    isolated: bool


def profile_model(
    target: str,
    device: str = "auto",
    batch_size: int = 32,
    input_size: int | None = None,
    repeats: int = 20,
    train_steps: int = 5,
    batches: int = 5,
    warmup: int = 2,
    amp: str = "auto",
    isolate: bool = True,
) -> ResourceProfile:
    """Profile a registry model (``alexnet``) or a checkpoint file; see the module docstring for the method.

    ``input_size`` defaults to the checkpoint's or the architecture's own size. ``amp`` follows
    ``train.amp``: ``auto`` is bf16/fp16 autocast on CUDA and float32 on CPU. ``isolate`` runs the
    measurement in a fresh spawned process so CPU memory peaks are this model's alone.
    """
    from_checkpoint = Path(target).is_file()
    if not from_checkpoint and target not in MODELS:
        raise InvalidArgumentError(
            f"{target!r} is neither an existing checkpoint file nor a registered model name; "
            f"known models: {', '.join(MODELS.names())}"
        )
    for name, value, least in (("batch_size", batch_size, 1), ("repeats", repeats, 1),
                               ("train_steps", train_steps, 1), ("batches", batches, 1), ("warmup", warmup, 0)):
        if value < least:
            raise InvalidArgumentError(f"{name} must be at least {least}, got {value}")
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    request = _Request(target, from_checkpoint, str(resolved), amp, batch_size, input_size, repeats, batches,
                       train_steps, warmup, torch.get_num_threads(), isolate)
    if not isolate:
        return _measure(request)
    return run_in_fresh_process(_measure, request, what=f"profiling {target}")


def compare_profiles(a: ResourceProfile, b: ResourceProfile) -> dict[str, float]:
    """``a / b`` for every measured quantity both profiles have, e.g. teacher over student."""
    ratios = {}
    for name, _, _ in METRICS:
        value_a, value_b = getattr(a, name), getattr(b, name)
        if value_a is not None and value_b:
            ratios[name] = value_a / value_b
    return ratios


def format_table(profiles: list[ResourceProfile]) -> Table:
    """Quantities as rows, models as columns; with two profiles, a ratio column (first / second)."""
    table = Table(title="Resource profile")
    table.add_column("quantity")
    for profile in profiles:
        table.add_column(f"{profile.model} @ {profile.input_size}px", justify="right")
    ratios = compare_profiles(profiles[0], profiles[1]) if len(profiles) == 2 else None
    if ratios is not None:
        table.add_column(f"{profiles[0].model} / {profiles[1].model}", justify="right")
    for name, label, fmt in METRICS:
        values = [getattr(p, name) for p in profiles]
        if all(v is None for v in values):
            continue
        cells = [_format(v, fmt) for v in values]
        if ratios is not None:
            cells.append(f"{ratios[name]:.2f}x" if name in ratios else "-")
        table.add_row(label, *cells)
    first = profiles[0]
    table.caption = (f"{first.device_name} ({first.device}, {first.threads} threads), torch {first.torch_version}, "
                     f"{first.precision}, batch {first.batch_size}; memory: {first.memory_scope}")
    return table


# -- measurement (runs in the spawned process when isolated) ---------------------------------------------
def _measure(request: _Request) -> ResourceProfile:
    torch.set_num_threads(request.threads)
    torch.manual_seed(0)
    device = torch.device(request.device)
    precision = resolve_precision(device, request.amp)
    on_cpu = device.type == "cpu"
    rss_baseline = current_rss_mb()

    model, name, size = _build(request)
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, size)
    serialized_mb = _serialized_mb(model)
    model.to(device)

    peak_resets = reset_peak_rss()
    inference = _measure_inference(model, request, size, precision)
    rss_inference = peak_rss_mb() if on_cpu else None
    reset_peak_rss()
    train = _measure_training(model, request, size, precision)
    rss_train = peak_rss_mb() if on_cpu else None

    process = "fresh spawned process" if request.isolated else "this process"
    if not on_cpu:
        scope = f"CUDA allocator peaks reset per phase; {process}"
    elif peak_resets:
        scope = f"peak RSS reset per phase (Linux clear_refs); {process}"
    else:
        scope = f"process peak RSS (ru_maxrss, may predate the profile); {process}"
    return ResourceProfile(
        model=name,
        source=request.target if request.from_checkpoint else "registry",
        device=str(device),
        device_name=cpu_name() if on_cpu else torch.cuda.get_device_name(device),
        cores=os.cpu_count() or 1,
        threads=torch.get_num_threads(),
        torch_version=str(torch.__version__),
        precision="float32" if precision.autocast_dtype is None else f"{precision.autocast_dtype} autocast",
        input_size=size,
        batch_size=request.batch_size,
        repeats=request.repeats,
        batches=request.batches,
        train_steps=request.train_steps,
        params=params,
        gflops=flops / 1e9,
        gmacs=flops / 2e9,
        serialized_mb=serialized_mb,
        memory_scope=scope,
        rss_baseline_mb=rss_baseline if on_cpu else None,
        peak_rss_inference_mb=rss_inference,
        peak_rss_train_mb=rss_train,
        rss_increase_mb=max(rss_inference, rss_train) - rss_baseline if on_cpu else None,
        **inference,
        **train,
    )


def _build(request: _Request) -> tuple[nn.Module, str, int]:
    """The model on the CPU, its architecture name and the input size to profile it at."""
    if request.from_checkpoint:
        model, metadata = model_from_checkpoint(request.target)
        return model, metadata["architecture"], request.input_size or int(metadata["input_size"])
    config = ModelConfig(name=request.target)
    size = input_size(config, request.input_size)
    return create_model(config, image_size=size), request.target, size


def _serialized_mb(model: nn.Module) -> float:
    """Size of the saved ``state_dict``; the buffer is freed on return so it does not count as model memory."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / MB


def _measure_inference(model: nn.Module, request: _Request, size: int, precision: Precision) -> dict[str, Any]:
    device = precision.device
    single = torch.randn(1, 3, size, size, device=device)
    batch = torch.randn(request.batch_size, 3, size, size, device=device)
    model.eval()
    _reset_cuda_peaks(device)
    latencies = []
    with torch.inference_mode(), precision.autocast():
        for _ in range(request.warmup):
            model(single)
        for _ in range(request.repeats):
            _sync(device)
            started = time.perf_counter()
            model(single)
            _sync(device)
            latencies.append(time.perf_counter() - started)
        for _ in range(request.warmup):
            model(batch)
        _sync(device)
        cpu_started, started = time.process_time(), time.perf_counter()
        for _ in range(request.batches):
            model(batch)
        _sync(device)
        elapsed, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    images = request.batches * request.batch_size
    result = {
        "latency_ms_median": float(np.median(latencies)) * 1e3,
        "latency_ms_p90": float(np.percentile(latencies, 90)) * 1e3,
        "inference_images_per_s": images / elapsed,
    }
    if device.type == "cuda":
        result["cuda_inference_allocated_mb"] = torch.cuda.max_memory_allocated(device) / MB
    else:
        result["cpu_ms_per_image_inference"] = cpu_seconds / images * 1e3
    return result


def _measure_training(model: nn.Module, request: _Request, size: int, precision: Precision) -> dict[str, Any]:
    device = precision.device
    images = torch.randn(request.batch_size, 3, size, size, device=device)
    labels = torch.randint(0, 2, (request.batch_size,), device=device)
    objective = SupervisedObjective().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=TRAIN_LR, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.needs_grad_scaler)

    def step() -> None:
        with precision.autocast():
            loss = objective.hard_loss(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    model.train()
    _reset_cuda_peaks(device)
    # At least one untimed step: the first allocates gradients and momentum buffers.
    for _ in range(max(1, request.warmup)):
        step()
    _sync(device)
    sampler = GpuSampler(device) if device.type == "cuda" else None
    with sampler or contextlib.nullcontext():
        cpu_started, started = time.process_time(), time.perf_counter()
        for _ in range(request.train_steps):
            step()
        _sync(device)
        elapsed, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    count = request.train_steps * request.batch_size
    result: dict[str, Any] = {"train_images_per_s": count / elapsed}
    if sampler is None:
        result["cpu_ms_per_image_train"] = cpu_seconds / count * 1e3
        return result
    result["cuda_train_allocated_mb"] = torch.cuda.max_memory_allocated(device) / MB
    result["cuda_train_reserved_mb"] = torch.cuda.max_memory_reserved(device) / MB
    result.update(sampler.summary())
    return result


def _reset_cuda_peaks(device: torch.device) -> None:
    """Start a phase's peaks afresh; emptying the cache first keeps the last phase's blocks out of its reserve."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _format(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "m":
        return f"{value / 1e6:.2f}"
    return fmt.format(value)

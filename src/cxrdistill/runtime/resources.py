"""Measuring what a process uses: resident memory from ``/proc``, GPU utilisation from NVML, fresh processes.

Shared by ``cxrdistill profile`` (deployment.profile) and the benchmarks, which measure models the same way.

* Resident memory: ``ru_maxrss`` alone cannot give a per-model figure: it never goes down, and on Linux it
  even survives ``fork``/``exec`` into a spawned child. On Linux the kernel's peak mark (``VmHWM``) is
  therefore reset through ``/proc/self/clear_refs`` and read back; elsewhere the process peak is what there is.
* A fresh process (multiprocessing ``spawn``) keeps memory freed by earlier work in the caller out of a peak.
* GPU utilisation: NVML, sampled every 50 ms on a background thread. NVML itself averages over its own
  sample period (1/6 s to 1 s depending on the GPU), so short loops give few distinct values. ``pynvml`` is
  imported only when sampling starts.

Sizes are in MB of 10^6 bytes.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import resource
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

MB = 1e6
NVML_INTERVAL_S = 0.05

Result = TypeVar("Result")


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS mark (Linux 4.0+); False where the system offers no way to."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak resident size since the last reset (``VmHWM``), else the process peak (``ru_maxrss``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB


def current_rss_mb() -> float:
    """Resident size now (``/proc/self/statm``); elsewhere the peak so far, the closest available."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return peak_rss_mb()
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MB


def run_in_fresh_process(function: Callable[..., Result], *args: Any, what: str) -> Result:
    """``function(*args)`` in a new spawned process, so its memory peaks are its own; both must pickle.

    ``what`` names the work in the error raised when the process dies (killed for lack of memory, usually).
    """
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(function, *args).result()
        except concurrent.futures.process.BrokenProcessPool as error:
            raise RuntimeError(f"the process {what} died (killed for lack of memory?); try a smaller batch") \
                from error


class GpuSampler:
    """NVML utilisation and memory in use, sampled on a background thread while the ``with`` block runs."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.utilisation: list[int] = []
        self.memory_used: list[int] = []
        self.note: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        self._handle: Any = None

    def __enter__(self) -> GpuSampler:
        try:
            import pynvml
        except ImportError:
            self.note = "pynvml (nvidia-ml-py) is not installed: no utilisation samples"
            return self
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            self.note = f"NVML unavailable: {error}"
            return self
        self._nvml = pynvml
        try:
            self._handle = self._find_handle(pynvml)
        except pynvml.NVMLError as error:
            self.note = f"no NVML handle for {self.device}: {error}"
            return self
        self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def _find_handle(self, pynvml: Any) -> Any:
        """Match by UUID, which survives CUDA_VISIBLE_DEVICES renumbering; fall back to the index."""
        uuid = str(torch.cuda.get_device_properties(self.device).uuid)
        uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        try:  # bytes: older nvidia-ml-py releases pass the argument to ctypes unconverted
            return pynvml.nvmlDeviceGetHandleByUUID(uuid.encode())
        except pynvml.NVMLError:
            self.note = "NVML device matched by index, not UUID"
            return pynvml.nvmlDeviceGetHandleByIndex(self.device.index or 0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.utilisation.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
                self.memory_used.append(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
            except self._nvml.NVMLError as error:  # e.g. utilisation is not supported on MIG slices
                self.note = f"NVML sampling failed: {error}"
                return
            self._stop.wait(NVML_INTERVAL_S)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        if self._nvml is not None:
            self._nvml.nvmlShutdown()

    def summary(self) -> dict[str, Any]:
        """Mean and max utilisation (%), sample count, max memory in use (MB) and why samples are missing."""
        if not self.utilisation:
            return {"gpu_util_samples": 0, "gpu_util_note": self.note or "no NVML samples (loop too short?)"}
        return {
            "gpu_util_mean": float(np.mean(self.utilisation)),
            "gpu_util_max": float(max(self.utilisation)),
            "gpu_util_samples": len(self.utilisation),
            "gpu_memory_used_max_mb": max(self.memory_used) / MB,
            "gpu_util_note": self.note,
        }

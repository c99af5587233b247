"""Measuring a process: resident memory from /proc, the NVML sampler (with a fake NVML), fresh processes."""

from __future__ import annotations

import os
import sys
import time
import types

import pytest
import torch

from cxrdistill.provenance import describe_machine
from cxrdistill.runtime.resources import GpuSampler, current_rss_mb, peak_rss_mb, reset_peak_rss, run_in_fresh_process


def _peak_rss_around_an_allocation() -> tuple[float, float, float, float, bool]:
    """Peak and current RSS before and while 64 MB are held, and the peak after a reset once freed."""
    reset_peak_rss()
    before = peak_rss_mb()
    block = bytearray(b"\x01") * 64_000_000  # every page written
    during, resident = peak_rss_mb(), current_rss_mb()
    del block
    resettable = reset_peak_rss()
    return before, during, resident, peak_rss_mb(), resettable


def test_peak_rss_rises_with_an_allocation_and_resets() -> None:
    # In a fresh process: a long-lived one (a whole test session) may serve the block from memory it
    # freed earlier and still holds, so its resident size would not move.
    before, during, resident, after, resettable = run_in_fresh_process(_peak_rss_around_an_allocation,
                                                                       what="allocating 64 MB")
    assert during >= before + 50 and resident >= 50
    if resettable:  # Linux: the mark comes back down to what is resident now
        assert after < before + 50


def test_run_in_fresh_process_runs_elsewhere_and_returns_the_result() -> None:
    assert run_in_fresh_process(os.getpid, what="asking its id") != os.getpid()


def test_a_dying_fresh_process_is_one_clear_error() -> None:
    with pytest.raises(RuntimeError, match="the process exiting at once died"):
        run_in_fresh_process(os._exit, 1, what="exiting at once")


def test_describe_machine() -> None:
    machine = describe_machine()
    assert machine["cpu"] and machine["cores"] >= 1 and machine["torch"] and machine["date"]


class _FakeNvml(types.ModuleType):
    """Just enough of ``pynvml`` to run the sampler without a GPU."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.uuid: bytes | None = None
        self.shut_down = False
        self.readings = iter([40, 90] + [60] * 10_000)

    def nvmlInit(self) -> None:  # noqa: N802
        pass

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shut_down = True

    def nvmlDeviceGetHandleByUUID(self, uuid: bytes) -> str:  # noqa: N802
        self.uuid = uuid
        return "handle"

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> types.SimpleNamespace:  # noqa: N802
        return types.SimpleNamespace(gpu=next(self.readings), memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> types.SimpleNamespace:  # noqa: N802
        return types.SimpleNamespace(used=2_000_000_000)


def test_gpu_sampler_with_a_fake_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(uuid="abc-123"))
    with GpuSampler(torch.device("cuda", 0)) as sampler:
        time.sleep(0.3)
    summary = sampler.summary()
    assert fake.uuid == b"GPU-abc-123" and fake.shut_down
    assert summary["gpu_util_samples"] >= 3 and summary["gpu_util_max"] == 90
    assert 40 < summary["gpu_util_mean"] < 90
    assert summary["gpu_memory_used_max_mb"] == pytest.approx(2000)


def test_gpu_sampler_without_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if nvidia-ml-py were missing
    with GpuSampler(torch.device("cuda", 0)) as sampler:
        pass
    summary = sampler.summary()
    assert summary["gpu_util_samples"] == 0 and "not installed" in summary["gpu_util_note"]

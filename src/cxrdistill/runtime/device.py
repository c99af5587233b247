"""Device and mixed-precision choices, made once per run."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from cxrdistill.errors import CxrDistillError


@dataclass(frozen=True)
class Precision:
    device: torch.device
    autocast_dtype: torch.dtype | None
    """``None`` runs in float32; otherwise the dtype ``torch.autocast`` uses."""

    @property
    def needs_grad_scaler(self) -> bool:
        return self.autocast_dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


class DeviceNotAvailableError(CxrDistillError, RuntimeError):
    """A device was asked for (``train.device``, ``--device``) that this machine does not have."""


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else the CPU; an unavailable device asked for by name is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceNotAvailableError(f"device {requested!r} was asked for but CUDA is not available; use device=cpu")
    return device


def resolve_precision(device: torch.device, amp: str) -> Precision:
    """``auto``: bf16 (or fp16) autocast on CUDA; float32 on CPU, where bf16 is slower on most CPUs."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return Precision(device, None)
    if device.type == "cuda":
        return Precision(device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return Precision(device, torch.bfloat16)

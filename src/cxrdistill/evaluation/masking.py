"""Masked-lung check: evaluate a model with the lung field hidden, or with everything but the lung field hidden.

If a model still separates the classes when it cannot see the lungs, its decision comes from outside them
(borders, markers, exposure, the shoulders): a shortcut. The mask is a fixed rectangle, in fractions of the
model's input, because the films are roughly centred; it is applied to the model's input tensor (after the
normal preprocessing, so nothing of it is repeated) by wrapping the model. Hidden pixels are set to a flat
mid-grey, the value that carries the least information about exposure in either direction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cxrdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cxrdistill.registry import Registry


@dataclass(frozen=True)
class LungField:
    """The rectangle that holds both lungs on a centred frontal film, in fractions of height and width."""

    top: float = 0.12
    bottom: float = 0.88
    left: float = 0.12
    right: float = 0.88

    def inside(self, height: int, width: int) -> torch.Tensor:
        """``(height, width)`` bool: True inside the rectangle."""
        rows = torch.arange(height, dtype=torch.float32).add_(0.5).div_(height)
        cols = torch.arange(width, dtype=torch.float32).add_(0.5).div_(width)
        in_rows = (rows >= self.top) & (rows < self.bottom)
        in_cols = (cols >= self.left) & (cols < self.right)
        return in_rows[:, None] & in_cols[None, :]


LUNG_FIELD = LungField()
"""The central 76 % of each side: on the class mean images of the Kermany training folder both lungs, the
heart and the diaphragm lie inside it, the shoulders, neck, corners and burnt-in side markers outside."""
FILL_GREY = 0.5
"""Hidden pixels become this grey level (0 black, 1 white) before the model's normalisation."""

HiddenPixels = Callable[[int, int], torch.Tensor]
MASKS: Registry[HiddenPixels] = Registry("input mask")


@MASKS.register("lungs")
def lung_field(height: int, width: int) -> torch.Tensor:
    """Hide the lung field: what the model still gets right, it reads from outside the lungs."""
    return LUNG_FIELD.inside(height, width)


@MASKS.register("outside-lungs")
def outside_lung_field(height: int, width: int) -> torch.Tensor:
    """Hide everything but the lung field: what the model gets right from the lungs alone."""
    return ~LUNG_FIELD.inside(height, width)


class MaskedInput(nn.Module):
    """``model`` behind a mask: the pixels ``hidden(height, width)`` marks are set to ``fill`` (per channel)."""

    def __init__(self, model: nn.Module, hidden: HiddenPixels, fill: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.hidden = hidden
        self.register_buffer("fill", torch.tensor(list(fill), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden(images.shape[-2], images.shape[-1]).to(images.device)
        return self.model(torch.where(hidden, self.fill.to(images.dtype), images))


def masked_model(model: nn.Module, mask: str | None, metadata: dict) -> nn.Module:
    """``model`` with the input ``mask`` (a name in :data:`MASKS`) applied, or unchanged for ``None``.

    The fill is :data:`FILL_GREY` normalised as the checkpoint normalises its input.
    """
    if mask is None:
        return model
    hidden = MASKS.get(mask)
    normalization = metadata.get("normalization") or {}
    mean, std = normalization.get("mean", IMAGENET_MEAN), normalization.get("std", IMAGENET_STD)
    return MaskedInput(model, hidden, [(FILL_GREY - m) / s for m, s in zip(mean, std, strict=True)])

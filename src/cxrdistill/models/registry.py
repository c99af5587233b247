"""The model registry: each architecture registers a :class:`ModelSpec` under its name.

A spec says how to build the network with a two-class head, which parameters form that head (so
transfer learning can re-initialise or train it alone), its input size, and where torchvision keeps
its ImageNet weights. ``create_model`` is the single entry point, as in timm.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from cxrdistill.registry import Registry


@dataclass(frozen=True)
class PaperFigures:
    """What the source paper's Table I prints, kept to show beside what we measure."""

    top1_error: float
    depth: int
    params_m: float
    computation_m: float


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[int, float, bool, int], nn.Module]
    """``build(num_classes, dropout, imagenet_input, input_size)`` -> model with a fresh ``num_classes`` head."""
    input_size: int
    head: tuple[str, ...]
    """Parameter-name prefixes of the classification head(s)."""
    weights_enum: str
    """Name of the torchvision weights enum, e.g. ``AlexNet_Weights``."""
    paper: PaperFigures
    min_input_size: int = 63
    extra: dict[str, str] = field(default_factory=dict)


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(spec: ModelSpec) -> ModelSpec:
    return MODELS.register(spec.name)(spec)


def model_spec(name: str) -> ModelSpec:
    return MODELS.get(name)

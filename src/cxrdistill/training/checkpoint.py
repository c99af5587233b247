"""Checkpoints that carry everything evaluation and deployment need, written atomically.

Besides weights and optimiser state, a checkpoint holds metadata in the spirit of a MONAI bundle:
architecture, input size, normalisation, class order, the full experiment config, versions and the
validation metrics — so ``cxrdistill evaluate best.pt`` needs no config file. The ``model_build``
record (:class:`cxrdistill.models.ModelBuild`) holds every setting that shapes the network but is not
a weight (InceptionV3's ImageNet input transform, for one); models are rebuilt from it, never from
the config's ``init``. Files are loaded with ``weights_only=True``: a checkpoint from elsewhere is
untrusted input and may not run code.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrdistill import __version__
from cxrdistill.config import ExperimentConfig, config_from_dict
from cxrdistill.data.layout import CLASS_NAMES
from cxrdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cxrdistill.errors import CxrDistillError
from cxrdistill.files import atomic_write
from cxrdistill.models import ModelBuild, model_build, rebuild_model

CHECKPOINT_FORMAT = "cxrdistill-checkpoint/1"
INTENDED_USE = "Research on pneumonia detection in paediatric chest X-rays. Not a medical device."


class CheckpointError(CxrDistillError, ValueError):
    """A file that is not a usable cxrdistill checkpoint, or one for another model or label set."""


def checkpoint_metadata(config: ExperimentConfig, input_size: int, metrics: dict[str, float] | None = None) -> dict:
    return {
        "architecture": config.model.name,
        "frontend": config.model.frontend,
        "input_size": input_size,
        "model_build": dataclasses.asdict(model_build(config.model, len(CLASS_NAMES), input_size)),
        "class_names": list(CLASS_NAMES),
        "positive_class": CLASS_NAMES[1],
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "input": "grey replicated to RGB"},
        "intensity_normalization": config.data.intensity_normalization,
        "config": config.to_dict(),
        "metrics": metrics or {},
        "intended_use": INTENDED_USE,
        "versions": {"cxrdistill": __version__, "torch": str(torch.__version__)},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def save_checkpoint(path: str | Path, model: nn.Module, metadata: dict, state: dict[str, Any] | None = None) -> Path:
    """Write weights + metadata (+ optimiser/scheduler/epoch ``state`` for resuming) in one atomic step."""
    payload = {"format": CHECKPOINT_FORMAT, "model_state": model.state_dict(), "metadata": metadata,
               "training_state": state or {}}
    return _write_payload(path, payload)


def update_checkpoint_metadata(path: str | Path, updates: dict[str, Any], out: str | Path | None = None) -> Path:
    """Merge ``updates`` into a checkpoint's metadata and write it (atomically) to ``out``, default in place.

    Weights and resume state are kept as they are: post-training additions such as the operating point
    or a calibration must not change the model or how a run resumes.
    """
    payload = load_checkpoint(path)
    payload["metadata"] = {**payload["metadata"], **updates}
    return _write_payload(out if out is not None else path, payload)


def _write_payload(path: str | Path, payload: dict[str, Any]) -> Path:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(path, lambda stream: stream.write(buffer.getbuffer()))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for non-checkpoints and for refused pickles
        raise CheckpointError(
            f"{path} is not a readable cxrdistill checkpoint (corrupt, truncated, or holds code): {error}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a cxrdistill checkpoint (no {CHECKPOINT_FORMAT!r} marker)")
    return payload


def experiment_config(payload: dict[str, Any]) -> ExperimentConfig:
    return config_from_dict(payload["metadata"]["config"])


def saved_model_build(payload: dict[str, Any]) -> ModelBuild:
    """A checkpoint's ``model_build`` record; checkpoints written before it existed are rebuilt, as
    they always were, from their config as scratch models."""
    metadata = payload["metadata"]
    if "model_build" in metadata:
        return ModelBuild(**metadata["model_build"])
    model_config = dataclasses.replace(experiment_config(payload).model, init="scratch")
    return model_build(model_config, len(metadata["class_names"]), int(metadata["input_size"]))


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint was trained as and load its weights (no pretrained download)."""
    payload = load_checkpoint(path)
    metadata = payload["metadata"]
    model = rebuild_model(saved_model_build(payload))
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit {metadata['architecture']}: {error}") from error
    return model, metadata


def check_class_names(metadata: dict[str, Any], source: str) -> None:
    if tuple(metadata.get("class_names", ())) != CLASS_NAMES:
        raise CheckpointError(
            f"{source} was trained with classes {metadata.get('class_names')}, but this toolkit's data use "
            f"{list(CLASS_NAMES)} in that order; its outputs would be misread"
        )

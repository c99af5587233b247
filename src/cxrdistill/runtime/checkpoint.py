"""Checkpoints as data, not code: weights in safetensors, everything else in a JSON sidecar.

A checkpoint ``NAME`` is two files side by side:

* ``NAME.safetensors`` — the weights (tensors only; the format cannot hold code);
* ``NAME.json`` — the sidecar: architecture and ``model_build`` record, input size, normalisation, class
  order, operating point and calibration, the full experiment config, the split's digest, versions,
  validation metrics, and the SHA-256 of the weights file. Weights whose hash differs from the sidecar's
  are refused: a checkpoint is loaded only as the pair it was saved as.

Commands take either file of the pair (any other name ``NAME.EXT`` names the pair ``NAME``). Nothing is
unpickled on load. A run's
``last`` checkpoint also has ``last.state.pt``: the state ``--resume`` needs (weights, optimiser,
scheduler, moving average, random-number generators), self-contained and written last, so a run killed
at any moment resumes from one consistent file; it is read with ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain containers.

The ``model_build`` record (:class:`cxrdistill.models.ModelBuild`) holds every setting that shapes the
network but is not a weight (InceptionV3's ImageNet input transform, for one); models are rebuilt from
it, never from the config's ``init``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from cxrdistill import __version__
from cxrdistill.config import ExperimentConfig, config_from_dict
from cxrdistill.data.layout import CLASS_NAMES
from cxrdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cxrdistill.errors import CxrDistillError
from cxrdistill.files import atomic_write, atomic_write_bytes, atomic_write_text
from cxrdistill.models import ModelBuild, model_build, network_normalization, rebuild_model

CHECKPOINT_FORMAT = "cxrdistill-checkpoint/2"
TRAINING_STATE_FORMAT = "cxrdistill-training-state/1"
WEIGHTS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
STATE_SUFFIX = ".state.pt"
INTENDED_USE = "Research on pneumonia detection in paediatric chest X-rays. Not a medical device."
MAX_INPUT_SIZE = 4096
"""Larger input sizes in a sidecar are refused before a network is built for them."""


class CheckpointError(CxrDistillError, ValueError):
    """A file that is not a usable cxrdistill checkpoint, or one for another model or label set."""


@dataclass(frozen=True)
class CheckpointFiles:
    """The files of one checkpoint, named from any of them (or from ``NAME`` with any other suffix)."""

    weights: Path
    sidecar: Path
    state: Path
    """Resume state (only a run's ``last`` checkpoint has one)."""

    @property
    def pending_sidecar(self) -> Path:
        """The next sidecar, written before the weights it describes (see :func:`save_weights`)."""
        return self.sidecar.with_name(self.sidecar.name + ".pending")

    @classmethod
    def of(cls, path: str | Path) -> CheckpointFiles:
        path = Path(path)
        name = path.name
        for suffix in (STATE_SUFFIX, WEIGHTS_SUFFIX, SIDECAR_SUFFIX):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        else:
            name = path.stem
        return cls(path.with_name(name + WEIGHTS_SUFFIX), path.with_name(name + SIDECAR_SUFFIX),
                   path.with_name(name + STATE_SUFFIX))


def checkpoint_files(path: str | Path) -> CheckpointFiles:
    return CheckpointFiles.of(path)


def training_state_path(path: str | Path) -> Path:
    """``NAME.state.pt``: the resume state beside the checkpoint ``path``."""
    return CheckpointFiles.of(path).state


def checkpoint_metadata(config: ExperimentConfig, input_size: int, metrics: dict[str, float] | None = None) -> dict:
    """What a checkpoint's sidecar records about the model trained from ``config`` at ``input_size``."""
    build = model_build(config.model, len(CLASS_NAMES), input_size)
    normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "input": "grey replicated to RGB"}
    inside = network_normalization(build)
    if inside is not None:
        normalization["inside_network"] = inside  # the first layer re-maps the input to what the weights expect
    return {
        "architecture": config.model.name,
        "frontend": config.model.frontend,
        "input_size": input_size,
        "model_build": dataclasses.asdict(build),
        "class_names": list(CLASS_NAMES),
        "positive_class": CLASS_NAMES[1],
        "normalization": normalization,
        "intensity_normalization": config.data.intensity_normalization,
        "border_crop": config.data.border_crop,
        "config": config.to_dict(),
        "metrics": metrics or {},
        "intended_use": INTENDED_USE,
        "versions": {"cxrdistill": __version__, "torch": str(torch.__version__)},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# -- writing -----------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, model: nn.Module, metadata: dict, state: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and ``metadata`` as ``NAME.safetensors`` + ``NAME.json``; returns the weights path.

    With ``state`` (optimiser, scheduler, epoch, ...) the resume file ``NAME.state.pt`` is written too, last,
    so that a resume file always has its checkpoint pair beside it.
    """
    weights = model.state_dict()
    files = save_weights(path, weights, metadata)
    if state is not None:
        save_training_state(files.state, {**state, "model_state": weights}, metadata)
    return files.weights


def save_weights(path: str | Path, weights: dict[str, torch.Tensor], metadata: dict) -> CheckpointFiles:
    """Replace the pair so that an interruption at any point leaves the old or the new checkpoint loadable.

    The new sidecar goes to ``NAME.json.pending`` first, then the weights replace ``NAME.safetensors``,
    then the pending sidecar is renamed over ``NAME.json`` (each step atomic). Between the last two steps
    the loader finds new weights whose hash only the pending sidecar records, and reads that one.
    """
    files = CheckpointFiles.of(path)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}
    data = save_safetensors(tensors)
    _write_sidecar(files.pending_sidecar, files, hashlib.sha256(data).hexdigest(), metadata)
    atomic_write_bytes(files.weights, data)
    os.replace(files.pending_sidecar, files.sidecar)
    return files


def _write_sidecar(target: Path, files: CheckpointFiles, sha256: str, metadata: dict) -> None:
    sidecar = {"format": CHECKPOINT_FORMAT, "weights": {"file": files.weights.name, "sha256": sha256},
               "metadata": metadata}
    try:
        text = json.dumps(sidecar, indent=1) + "\n"
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"metadata for {files.sidecar} is not plain JSON data: {error}") from error
    atomic_write_text(target, text)


def update_checkpoint_metadata(path: str | Path, updates: dict[str, Any], out: str | Path | None = None) -> Path:
    """Merge ``updates`` into a checkpoint's metadata; write it in place (sidecar only) or as a new checkpoint ``out``.

    Weights and resume state are kept as they are: post-training additions such as the operating point
    or a calibration must not change the model or how a run resumes. Returns the weights path written.
    """
    files = CheckpointFiles.of(path)
    payload = load_checkpoint(files.weights)
    metadata = {**payload["metadata"], **updates}
    if out is None or CheckpointFiles.of(out).weights.resolve() == files.weights.resolve():
        _write_sidecar(files.sidecar, files, payload["sha256"], metadata)
        with contextlib.suppress(FileNotFoundError):
            files.pending_sidecar.unlink()  # it described these weights, if anything; the sidecar now does
        return files.weights
    side_files = {}
    for kind, record in (metadata.get(SIDE_FILES_KEY) or {}).items():  # the new checkpoint carries its own copies
        side_files[kind] = save_side_tensors(out, kind, load_side_tensors(files.weights, kind, record))
    if side_files:
        metadata[SIDE_FILES_KEY] = side_files
    return save_weights(out, payload["model_state"], metadata).weights


SIDE_FILES_KEY = "side_files"
"""``metadata["side_files"][KIND] = {"file", "sha256"}``: arrays fitted after training (``NAME.KIND.safetensors``)."""


def side_file_path(path: str | Path, kind: str) -> Path:
    """``NAME.KIND.safetensors`` beside the checkpoint ``path``."""
    weights = CheckpointFiles.of(path).weights
    return weights.with_name(f"{weights.name[: -len(WEIGHTS_SUFFIX)]}.{kind}{WEIGHTS_SUFFIX}")


def save_side_tensors(path: str | Path, kind: str, tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """Write ``tensors`` beside checkpoint ``path``; returns the ``{"file", "sha256"}`` record for its metadata.

    Arrays fitted after training (statistics of the training features, say) stay out of the weights, so the
    weights' hash and the network's state dict do not change, and out of the sidecar, so it stays readable.
    """
    target = side_file_path(path, kind)
    data = save_safetensors({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()})
    atomic_write_bytes(target, data)
    return {"file": target.name, "sha256": hashlib.sha256(data).hexdigest()}


def load_side_tensors(path: str | Path, kind: str, record: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The arrays a checkpoint's metadata records under ``side_files[kind]``, checked against their hash."""
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) or \
            not isinstance(record.get("sha256"), str):
        raise CheckpointError(f"{path}: metadata {SIDE_FILES_KEY}.{kind} is not a {{file, sha256}} record")
    target = CheckpointFiles.of(path).weights.with_name(Path(record["file"]).name)
    try:
        data = target.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: its {kind} file {target.name} cannot be read ({error.strerror or error}); "
                              f"it must lie beside the checkpoint") from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != record["sha256"]:
        raise CheckpointError(f"{target} does not match the checkpoint's record (SHA-256 {digest[:12]}..., recorded "
                              f"{record['sha256'][:12]}...): it was changed or replaced after it was written")
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as error:
        raise CheckpointError(f"{target} is not a readable safetensors file: {error}") from error


def save_training_state(path: str | Path, state: dict[str, Any], metadata: dict) -> Path:
    """The resume file: ``state`` (tensors, numbers, lists) plus the run's metadata as JSON text."""
    payload = {"format": TRAINING_STATE_FORMAT, "metadata_json": json.dumps(metadata), **state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write(path, lambda stream: stream.write(buffer.getbuffer()))


# -- reading -----------------------------------------------------------------------------------
def read_sidecar(path: str | Path) -> dict[str, Any]:
    """A checkpoint's sidecar, checked for the fields loading relies on (the weights are not read)."""
    return _parse_sidecar(_existing_files(path).sidecar)


def _parse_sidecar(path: Path) -> dict[str, Any]:
    try:
        sidecar = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path} is not a readable checkpoint sidecar (JSON): {error}") from error
    if not isinstance(sidecar, dict) or sidecar.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a cxrdistill checkpoint sidecar (no {CHECKPOINT_FORMAT!r} marker)")
    weights = sidecar.get("weights")
    if not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str):
        raise CheckpointError(f"{path} records no SHA-256 of its weights")
    sidecar["metadata"] = _checked_metadata(sidecar.get("metadata"), path)
    return sidecar


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata from its sidecar alone (cheap: for its config, input size or classes)."""
    return read_sidecar(path)["metadata"]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``{"format", "model_state", "metadata", "sha256"}``, the weights checked against the sidecar's hash."""
    files = _existing_files(path)
    sidecar = _parse_sidecar(files.sidecar)
    data = files.weights.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sidecar["weights"]["sha256"] and files.pending_sidecar.is_file():
        with contextlib.suppress(CheckpointError):  # a save stopped between its last two steps
            pending = _parse_sidecar(files.pending_sidecar)
            if pending["weights"]["sha256"] == digest:
                sidecar = pending
    if digest != sidecar["weights"]["sha256"]:
        raise CheckpointError(
            f"{files.weights} does not match its sidecar {files.sidecar.name} (SHA-256 {digest[:12]}..., recorded "
            f"{sidecar['weights']['sha256'][:12]}...): the weights were changed or replaced after saving, or a save "
            f"was interrupted; refusing to load them"
        )
    try:
        model_state = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as error:
        raise CheckpointError(f"{files.weights} is not a readable safetensors file: {error}") from error
    return {"format": CHECKPOINT_FORMAT, "model_state": model_state, "metadata": sidecar["metadata"],
            "sha256": digest}


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The resume state beside checkpoint ``path`` (``NAME.state.pt``), its ``metadata`` decoded."""
    state_path = CheckpointFiles.of(path).state
    if not state_path.is_file():
        raise CheckpointError(f"no resume state {state_path}")
    try:
        payload = torch.load(state_path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != TRAINING_STATE_FORMAT:
            raise ValueError(f"no {TRAINING_STATE_FORMAT!r} marker")
        payload["metadata"] = json.loads(payload.pop("metadata_json"))
    except Exception as error:  # torch raises many kinds for damaged files and for refused pickles
        raise CheckpointError(f"{state_path} is not a readable resume state (corrupt, truncated, or holds code): "
                              f"{error}") from error
    return payload


def _existing_files(path: str | Path) -> CheckpointFiles:
    path = Path(path)
    files = CheckpointFiles.of(path)
    if files.weights.is_file() and files.sidecar.is_file():
        return files
    if path.is_file() and path.suffix not in (WEIGHTS_SUFFIX, SIDECAR_SUFFIX):
        raise CheckpointError(f"{path} is not a cxrdistill checkpoint: a checkpoint is the pair "
                              f"{files.weights.name} + {files.sidecar.name}, and they are not both there")
    missing = files.weights if not files.weights.is_file() else files.sidecar
    raise CheckpointError(f"checkpoint {path}: {missing} does not exist (a checkpoint is NAME{WEIGHTS_SUFFIX} "
                          f"with its sidecar NAME{SIDECAR_SUFFIX})")


def _checked_metadata(metadata: Any, source: Path) -> dict[str, Any]:
    """Refuse metadata whose fields the loaders use have the wrong type or an absurd value."""
    expected = {"architecture": str, "input_size": int, "class_names": list, "config": dict}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{source}: 'metadata' is not a mapping")
    for key, kind in expected.items():
        if not isinstance(metadata.get(key), kind) or isinstance(metadata.get(key), bool):
            raise CheckpointError(f"{source}: metadata {key!r} is missing or not a {kind.__name__}")
    if not 1 <= metadata["input_size"] <= MAX_INPUT_SIZE:
        raise CheckpointError(f"{source}: input_size {metadata['input_size']} is outside 1..{MAX_INPUT_SIZE}")
    if not all(isinstance(name, str) for name in metadata["class_names"]):
        raise CheckpointError(f"{source}: class_names must be text")
    return metadata


def experiment_config(payload: dict[str, Any]) -> ExperimentConfig:
    return config_from_dict(payload["metadata"]["config"])


def saved_model_build(payload: dict[str, Any]) -> ModelBuild:
    """A checkpoint's ``model_build`` record, checked to describe a network for its classes and size."""
    metadata = payload["metadata"]
    if not isinstance(metadata.get("model_build"), dict):
        raise CheckpointError("the checkpoint records no model_build: it does not say how to rebuild its network")
    try:
        build = ModelBuild(**metadata["model_build"])
    except TypeError as error:
        raise CheckpointError(f"the checkpoint's model record is unusable: {error}") from error
    numbers_fit = (isinstance(build.num_classes, int) and build.num_classes == len(metadata["class_names"])
                   and isinstance(build.input_size, int) and 1 <= build.input_size <= MAX_INPUT_SIZE
                   and isinstance(build.dropout, (int, float)) and 0 <= build.dropout <= 1
                   and isinstance(build.frontend_options, dict))
    if not numbers_fit:
        raise CheckpointError(f"the checkpoint's model record {dataclasses.asdict(build)} does not describe a "
                              f"{len(metadata['class_names'])}-class network")
    return build


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint was trained as and load its weights (no pretrained download)."""
    payload = load_checkpoint(path)
    metadata = payload["metadata"]
    try:
        model = rebuild_model(saved_model_build(payload))
        model.load_state_dict(payload["model_state"])
    except CheckpointError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{path}: weights do not fit {metadata['architecture']}: {error}") from error
    return model, metadata


def check_class_names(metadata: dict[str, Any], source: str) -> None:
    if tuple(metadata.get("class_names", ())) != CLASS_NAMES:
        raise CheckpointError(
            f"{source} was trained with classes {metadata.get('class_names')}, but this toolkit's data use "
            f"{list(CLASS_NAMES)} in that order; its outputs would be misread"
        )

"""Classifying image files with a trained student: from a checkpoint (PyTorch) or an exported ONNX file.

This is the path a deployment takes: decode with :func:`read_grey` (any format, DICOM included), make
the model's input with the one inference preprocessing (:class:`cxrdistill.data.preprocess.Preprocessing`),
run. The ONNX route needs only onnxruntime and numpy at run time, which is what a clinic PC or an edge
box should carry.

A :class:`Predictor` holds one loaded model (the command line's batch and the web service both use it);
:func:`predict_files` runs one over many files, optionally writing a Grad-CAM overlay per image
(:mod:`cxrdistill.deployment.heatmap`). Heat maps need gradients, so with an ONNX model they come from
the checkpoint it was exported from, given as ``checkpoint``; without one, asking for them is an error.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxrdistill.data.io import UnreadableImageError, is_dicom, is_image_file, read_grey
from cxrdistill.data.preprocess import Preprocessing
from cxrdistill.deployment.heatmap import GradCam, overlay
from cxrdistill.deployment.ood import FLAG_TEXT, load_ood, stored_ood_threshold
from cxrdistill.errors import InvalidArgumentError
from cxrdistill.evaluation.operating_point import DEFAULT_THRESHOLD, threshold_in_use
from cxrdistill.files import atomic_write, atomic_write_text, file_digest
from cxrdistill.runtime.checkpoint import CheckpointError, checkpoint_files
from cxrdistill.runtime.served import load_served_model, warn_if_synthetic


@dataclass(frozen=True)
class FilePrediction:
    file: str
    prob_pneumonia: float | None
    predicted: str | None
    error: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    """The threshold ``predicted`` was decided at (the model's operating point unless one was given)."""
    heatmap: str | None = None
    """The Grad-CAM overlay written for this file, when heat maps were asked for."""
    ood_score: float | None = None
    """How far the image lies from the training images (see :mod:`cxrdistill.deployment.ood`), when fitted."""
    ood_flag: bool | None = None
    """The score is above the check's threshold: the image is not like the training images."""

    @property
    def shown_label(self) -> str | None:
        """The label as shown to people: marked when the image is not like the training images."""
        if self.predicted is None or not self.ood_flag:
            return self.predicted
        return f"{self.predicted} ({FLAG_TEXT})"


Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
"""A batch of model inputs -> its logits and, when the model has a fitted check, its out-of-distribution scores."""


def _onnx_runner(path: Path) -> tuple[Runner, dict]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    metadata = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    if "input_size" not in metadata:
        raise CheckpointError(f"{path} has no cxrdistill metadata (input_size, class_names); export it with cxrdistill")
    outputs = [output.name for output in session.get_outputs()]
    if "ood_score" in outputs:
        return (lambda batch: tuple(session.run(["logits", "ood_score"], {"image": batch}))), metadata
    return (lambda batch: (session.run(["logits"], {"image": batch})[0], None)), metadata


def _torch_runner(model: torch.nn.Module, scored: torch.nn.Module | None) -> Runner:
    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            if scored is None:
                return model(torch.from_numpy(batch)).numpy(), None
            logits, scores = scored(torch.from_numpy(batch))
            return logits.numpy(), scores.numpy()

    return run


def model_id(path: Path) -> str:
    """File name and the start of its SHA-256: which model answered, in logs and service responses."""
    return f"{path.name}@sha256:{file_digest(path)[:12]}"


class Predictor:
    """One model loaded once: probabilities (and, with a PyTorch model, Grad-CAM maps) for grey images.

    ``model_path`` is a checkpoint or an ONNX file; ``checkpoint`` (for an ONNX model) is the PyTorch
    checkpoint it was exported from, used for heat maps only. ``threshold`` defaults to the one
    ``operating_point`` picks from the model's metadata (see
    :data:`cxrdistill.evaluation.operating_point.THRESHOLD_CHOICES`): by default a threshold fitted at the
    site, else 0.5.
    """

    def __init__(self, model_path: str | Path, threshold: float | None = None,
                 checkpoint: str | Path | None = None, operating_point: str = "default") -> None:
        self.model_path = Path(model_path)
        if self.model_path.suffix != ".onnx":  # NAME.pt or NAME.json name the checkpoint pair too
            self.model_path = checkpoint_files(self.model_path).weights
        if not self.model_path.is_file():
            raise CheckpointError(f"model {self.model_path} does not exist")
        self._torch_model: torch.nn.Module | None = None
        if self.model_path.suffix == ".onnx":
            self._run, self.metadata = _onnx_runner(self.model_path)
            warn_if_synthetic(self.metadata, self.model_path)
            if checkpoint is not None:
                self._torch_model = self._matching_checkpoint(Path(checkpoint))
        else:
            if checkpoint is not None:
                raise InvalidArgumentError("a heat-map checkpoint is only needed with an ONNX model; "
                                           f"{self.model_path} is a checkpoint already")
            self._torch_model, self.metadata = load_served_model(self.model_path)
            self._torch_model.eval()
            self._run = _torch_runner(self._torch_model, load_ood(self.model_path, self._torch_model, self.metadata))
        self.threshold_in_use = threshold_in_use(self.metadata, operating_point, threshold)
        self.threshold = self.threshold_in_use.threshold
        self.ood_threshold = stored_ood_threshold(self.metadata)
        """Scores above it are flagged "not like the training images"; ``None``: the model has no fitted check."""
        self.input_size = int(self.metadata["input_size"])
        self.class_names: list[str] = list(self.metadata["class_names"])
        self.preprocessing = Preprocessing.of(self.metadata)
        self.model_id = model_id(self.model_path)
        self._grad_cam = None

    def _matching_checkpoint(self, checkpoint: Path) -> torch.nn.Module:
        model, metadata = load_served_model(checkpoint)
        for key in ("architecture", "input_size", "class_names"):
            if metadata.get(key) != self.metadata.get(key):
                raise CheckpointError(f"{checkpoint} does not match {self.model_path}: {key} is "
                                      f"{metadata.get(key)!r} there and {self.metadata.get(key)!r} here")
        return model.eval()

    @property
    def has_heatmaps(self) -> bool:
        return self._torch_model is not None

    def model_input(self, grey: np.ndarray) -> torch.Tensor:
        """A decoded grey image -> the ``(3, S, S)`` normalised tensor this model takes."""
        return self.preprocessing.from_grey(grey)

    def probabilities(self, inputs: torch.Tensor) -> list[float]:
        """PNEUMONIA probability per image of a ``(N, 3, S, S)`` batch of model inputs."""
        return self.assess(inputs)[0]

    def assess(self, inputs: torch.Tensor) -> tuple[list[float], list[float | None]]:
        """PNEUMONIA probabilities and out-of-distribution scores (``None`` without a fitted check), one pass."""
        logits, scores = self._run(inputs.numpy())
        probabilities = torch.softmax(torch.from_numpy(logits).float(), dim=1)[:, 1].tolist()
        return probabilities, [None] * len(probabilities) if scores is None else [float(s) for s in scores]

    def is_unfamiliar(self, score: float | None) -> bool | None:
        """Whether a score is above the check's threshold (``None`` when there is no check)."""
        return None if score is None or self.ood_threshold is None else score > self.ood_threshold

    def label(self, probability: float) -> str:
        return self.class_names[int(probability >= self.threshold)]

    def require_heatmaps(self) -> None:
        if self._torch_model is None:
            raise InvalidArgumentError(
                f"heat maps need gradients, which the ONNX model {self.model_path.name} has not: give the "
                "checkpoint it was exported from (--checkpoint), or predict with the checkpoint itself")

    def heatmaps(self, inputs: torch.Tensor) -> np.ndarray:
        """Grad-CAM maps ``(N, S, S)`` in [0, 1] for a batch of model inputs (PyTorch model only)."""
        self.require_heatmaps()
        if self._grad_cam is None:
            self._grad_cam = GradCam(self._torch_model, self.input_size)
        return self._grad_cam(inputs)


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and each folder's image files (by suffix, or DICOM by its marker), recursively, sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        for candidate in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if is_image_file(candidate) or _has_dicom_marker(candidate):
                files.append(candidate)
    return files


def _has_dicom_marker(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            return is_dicom(stream)
    except OSError:
        return False


def _heatmap_names(files: Sequence[Path]) -> list[str]:
    """``STEM.png`` per file; repeated stems (same name in two folders) get ``-1``, ``-2``, ..."""
    seen: dict[str, int] = {}
    names = []
    for file in files:
        count = seen.get(file.stem, 0)
        seen[file.stem] = count + 1
        names.append(f"{file.stem}.png" if count == 0 else f"{file.stem}-{count}.png")
    return names


def predict_files(model_path: str | Path | Predictor, files: Sequence[str | Path], threshold: float | None = None,
                  batch_size: int = 16, heatmap_dir: str | Path | None = None, checkpoint: str | Path | None = None,
                  progress: bool = False, operating_point: str = "default") -> list[FilePrediction]:
    """Probability of PNEUMONIA per file; unreadable files get an error entry instead of stopping the batch.

    ``threshold`` defaults to the one ``operating_point`` picks (see :class:`Predictor`); a loaded
    :class:`Predictor` may be passed instead of a path, with its own threshold.
    With ``heatmap_dir`` a Grad-CAM overlay PNG is written there per readable file (see :class:`Predictor`
    for ``checkpoint``).
    """
    predictor = (model_path if isinstance(model_path, Predictor)
                 else Predictor(model_path, threshold, checkpoint, operating_point))
    if heatmap_dir is not None:
        predictor.require_heatmaps()  # before any work is done
    paths = [Path(f) for f in files]
    names = _heatmap_names(paths)
    if heatmap_dir is not None:
        Path(heatmap_dir).mkdir(parents=True, exist_ok=True)
    results: dict[int, FilePrediction] = {}
    bar = _progress_bar(len(paths), progress)
    for start in range(0, len(paths), batch_size):
        greys, inputs, indices = [], [], []
        for index in range(start, min(start + batch_size, len(paths))):
            try:
                grey = read_grey(paths[index])
            except UnreadableImageError as error:
                results[index] = FilePrediction(str(files[index]), None, None, error.reason, predictor.threshold)
                continue
            greys.append(grey)
            inputs.append(predictor.model_input(grey))
            indices.append(index)
        if inputs:
            batch = torch.stack(inputs)
            probs, scores = predictor.assess(batch)
            maps = predictor.heatmaps(batch) if heatmap_dir is not None else [None] * len(indices)
            for index, grey, prob, score, cam in zip(indices, greys, probs, scores, maps, strict=True):
                written = None
                if cam is not None:
                    written = Path(heatmap_dir) / names[index]
                    picture = overlay(grey, cam)
                    atomic_write(written, lambda stream, picture=picture: picture.save(stream, format="PNG"))
                results[index] = FilePrediction(str(files[index]), prob, predictor.label(prob),
                                                threshold=predictor.threshold,
                                                heatmap=None if written is None else str(written),
                                                ood_score=score, ood_flag=predictor.is_unfamiliar(score))
        bar.update(min(batch_size, len(paths) - start))
    bar.close()
    return [results[i] for i in range(len(paths))]


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="image", desc="predict", disable=not enabled)


PREDICTION_COLUMNS = ("file", "probability", "label", "threshold", "heatmap", "error", "ood_score", "ood_flag")


def write_predictions_csv(results: Sequence[FilePrediction], out: str | Path) -> Path:
    """One row per file (unreadable ones too, with their error), columns :data:`PREDICTION_COLUMNS`."""
    out = Path(out)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(PREDICTION_COLUMNS)
    for r in results:
        writer.writerow([r.file, "" if r.prob_pneumonia is None else f"{r.prob_pneumonia:.6f}", r.predicted or "",
                         f"{r.threshold:.6g}", r.heatmap or "", r.error or "",
                         "" if r.ood_score is None else f"{r.ood_score:.6g}",
                         "" if r.ood_flag is None else FLAG_TEXT if r.ood_flag else "no"])
    atomic_write_text(out, text.getvalue())
    return out

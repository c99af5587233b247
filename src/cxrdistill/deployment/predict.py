"""Classifying image files with a trained student: from a checkpoint (PyTorch) or an exported ONNX file.

This is the path a deployment takes: decode with :func:`read_grey` (any format, DICOM included),
resize to the model's own input size, normalise with :func:`to_model_input`, run. The ONNX route needs
only onnxruntime and numpy at run time, which is what a clinic PC or an edge box should carry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxrdistill.data.io import UnreadableImageError, load_for_model
from cxrdistill.data.transforms import normalize_intensity, to_model_input
from cxrdistill.evaluation.calibration import DEFAULT_THRESHOLD, load_served_model, stored_threshold
from cxrdistill.training.checkpoint import CheckpointError


@dataclass(frozen=True)
class FilePrediction:
    file: str
    prob_pneumonia: float | None
    predicted: str | None
    error: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    """The threshold ``predicted`` was decided at (the model's operating point unless one was given)."""


def _onnx_runner(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    metadata = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    if "input_size" not in metadata:
        raise CheckpointError(f"{path} has no cxrdistill metadata (input_size, class_names); export it with cxrdistill")
    return (lambda batch: session.run(["logits"], {"image": batch})[0]), metadata


def _torch_runner(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    model, metadata = load_served_model(path)  # with the stored temperature, as the ONNX graph has it
    model.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    return run, metadata


def predict_files(model_path: str | Path, files: Sequence[str | Path], threshold: float | None = None,
                  batch_size: int = 16) -> list[FilePrediction]:
    """Probability of PNEUMONIA per file; unreadable files get an error entry instead of stopping the batch.

    ``threshold`` defaults to the model's stored operating point (checkpoint or ONNX metadata), else 0.5.
    """
    model_path = Path(model_path)
    run, metadata = _onnx_runner(model_path) if model_path.suffix == ".onnx" else _torch_runner(model_path)
    if threshold is None:
        stored = stored_threshold(metadata)
        threshold = DEFAULT_THRESHOLD if stored is None else stored
    size, classes = int(metadata["input_size"]), metadata["class_names"]
    intensity = metadata.get("intensity_normalization", "none")  # absent in models from before the setting
    results: list[FilePrediction] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images, readable = [], []
        for file in chunk:
            try:
                pixels = torch.tensor(load_for_model(file, size)).unsqueeze(0)  # a copy: decoded arrays are read-only
            except UnreadableImageError as error:
                results.append(FilePrediction(str(file), None, None, error.reason))
                continue
            images.append(to_model_input(normalize_intensity(pixels, intensity)))
            readable.append(str(file))
        if not images:
            continue
        logits = torch.from_numpy(run(torch.stack(images).numpy()))
        probs = torch.softmax(logits.float(), dim=1)[:, 1].tolist()
        results += [FilePrediction(f, p, classes[int(p >= threshold)], threshold=threshold)
                    for f, p in zip(readable, probs, strict=True)]
    order = {str(f): i for i, f in enumerate(files)}
    return sorted(results, key=lambda r: order[r.file])

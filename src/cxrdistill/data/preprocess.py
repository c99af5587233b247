"""The one inference preprocessing: an image file (or its decoded grey pixels) -> the tensor a model takes.

``predict`` and ``serve`` (through ``Predictor``), the INT8 calibration, evaluation and the teacher-logit
cache (through :func:`cxrdistill.data.dataset.build_dataset` without augmentation) all compute a model's input
here, and the ONNX export writes :meth:`Preprocessing.record` into its metadata for other runtimes to follow.
Training differs only by its augmentation, applied by ``XRayTransform`` inside the same chain
(:func:`cxrdistill.data.transforms.model_input`).

The chain: decode to one grey channel (:func:`cxrdistill.data.io.read_grey`), cut off the model's border crop
(``data.border_crop``, 0 by default), resize to ``input_size`` squared (bilinear, antialiased, aspect not
kept), the model's intensity normalisation, scale to [0, 1], replicate to three channels, ImageNet mean and
standard deviation. The steps up to the resize give the pixels the decoded-image cache stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrdistill.config import DataConfig
from cxrdistill.data.io import crop_border, load_for_model, read_grey, resize_grey
from cxrdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD, model_input, normalize_intensity


@dataclass(frozen=True)
class Preprocessing:
    """How one model's inputs are made; plain data, so it pickles into data-loader workers."""

    input_size: int
    intensity: str = "none"
    """The model's read-time intensity normalisation (``data.intensity_normalization``), part of the model."""
    border_crop: float = 0.0
    """Share of each side cut off before the resize (``data.border_crop``), part of the model."""

    def __post_init__(self) -> None:
        normalize_intensity(torch.zeros(1, 1, 1, dtype=torch.uint8), self.intensity)  # refuse a bad name up front
        crop_border(np.zeros((1, 1), dtype=np.uint8), self.border_crop)  # and a crop out of range

    @classmethod
    def of_data(cls, config: DataConfig, input_size: int) -> Preprocessing:
        """The preprocessing a data config asks for at ``input_size``: what a run trained with it records."""
        return cls(input_size, config.intensity_normalization, config.border_crop)

    @classmethod
    def of(cls, metadata: dict[str, Any]) -> Preprocessing:
        """The preprocessing a checkpoint's (or an exported model's) metadata records."""
        return cls(int(metadata["input_size"]), metadata.get("intensity_normalization", "none"),
                   float(metadata.get("border_crop", 0.0)))

    def pixels(self, path: str | Path) -> np.ndarray:
        """Decoded, cropped and resized ``uint8`` pixels: what the decoded-image cache stores."""
        return load_for_model(path, self.input_size, self.border_crop)

    def from_pixels(self, pixels: np.ndarray) -> torch.Tensor:
        """Pixels of :meth:`pixels` (cropped, ``S x S``) -> the ``(3, S, S)`` model input."""
        return model_input(pixels, self.intensity)

    def from_grey(self, grey: np.ndarray) -> torch.Tensor:
        """Decoded grey pixels of any size -> the ``(3, S, S)`` model input."""
        return self.from_pixels(resize_grey(crop_border(grey, self.border_crop), self.input_size))

    def __call__(self, path: str | Path) -> torch.Tensor:
        """An image file -> the ``(3, S, S)`` model input."""
        return self.from_grey(read_grey(path))

    def record(self) -> dict[str, Any]:
        """The chain as data, for an exported model's metadata and the teacher cache's key."""
        return {"read": "one grey channel, 8 bits (16-bit and DICOM windowed)", "input_size": self.input_size,
                **({"border_crop": self.border_crop} if self.border_crop else {}),
                "resize": "bilinear, antialiased, aspect not kept", "intensity_normalization": self.intensity,
                "scale": "x / 255", "channels": "grey replicated to RGB", "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD)}

"""The warning every loader of a model gives when that model never saw a real X-ray.

Evaluation, prediction, the web service and ONNX export load models through
:func:`cxrdistill.evaluation.calibration.load_served_model` (checkpoints) or the ONNX reader of
:mod:`cxrdistill.deployment.predict`; both call :func:`warn_if_synthetic`, so the four commands warn alike.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


class SyntheticDataWarning(UserWarning):
    """The model was trained on the project's made-up images, not on X-rays: its outputs mean nothing clinically."""


def warn_if_synthetic(metadata: dict[str, Any], source: str | Path) -> None:
    """Warn when the metadata (of a checkpoint or an exported model) says it was trained on synthetic images."""
    if metadata.get("synthetic_data"):
        warnings.warn(f"{source} was trained on SYNTHETIC images (made-up data, not X-rays); its predictions and "
                      "metrics say nothing about real chest X-rays", SyntheticDataWarning, stacklevel=3)

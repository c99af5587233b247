"""Export a trained checkpoint to ONNX for deployment, and check it with ONNX Runtime.

The exported graph takes ``(N, 3, S, S)`` float input, ImageNet-normalised grey replicated to three
channels (exactly :func:`cxrdistill.data.transforms.to_model_input`), and returns two logits per image.
The checkpoint's metadata (classes, input size, normalisation, intended use, operating point and
calibration) goes into the ONNX file's metadata so that the exported model explains itself. A
calibrated checkpoint's temperature is part of the graph: its ``logits`` are already divided by T,
so a softmax over them gives the calibrated probabilities, and the stored threshold applies to those.
Export is verified: ONNX Runtime must reproduce PyTorch's logits on random input, otherwise the file is not kept.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxrdistill.deployment.model_card import write_model_card
from cxrdistill.evaluation.calibration import load_served_model

OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_difference: float
    size_mb: float


def export_onnx(checkpoint: str | Path, out: str | Path, tolerance: float = 1e-3) -> ExportResult:
    """Write ``out`` (.onnx) from ``checkpoint``; raise if ONNX Runtime disagrees with PyTorch."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ImportError("ONNX export needs onnx and onnxruntime: pip install 'cxrdistill[deploy]'") from error
    model, metadata = load_served_model(checkpoint)
    model.eval()
    size = int(metadata["input_size"])
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        staged = Path(scratch) / out.name
        torch.onnx.export(
            model, (example,), staged, input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
        graph = onnx.load(staged)
        for key in ("architecture", "input_size", "class_names", "positive_class", "normalization",
                    "intensity_normalization", "intended_use"):
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, json.dumps(metadata.get(key, "none"))
        for key in ("operating_point", "calibration"):  # absent from uncalibrated and older checkpoints
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, json.dumps(metadata.get(key))
        onnx.save(graph, staged)
        session = onnxruntime.InferenceSession(str(staged), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = model(example).numpy()
        actual = session.run(["logits"], {"image": example.numpy()})[0]
        difference = float(np.max(np.abs(actual - expected)))
        if difference > tolerance:
            raise RuntimeError(f"ONNX Runtime differs from PyTorch by {difference:.2e} (> {tolerance}); not exported")
        staged.replace(out)
    write_model_card(checkpoint, out)
    return ExportResult(out, difference, out.stat().st_size / 1e6)

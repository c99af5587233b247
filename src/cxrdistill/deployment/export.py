"""Export a trained checkpoint to ONNX for deployment, and check it with ONNX Runtime.

The exported graph takes ``(N, 3, S, S)`` float input, ImageNet-normalised grey replicated to three
channels, made from a file by :class:`cxrdistill.data.preprocess.Preprocessing` (recorded as data in
the ``preprocessing`` metadata entry), and returns two logits per image. The checkpoint's metadata
(classes, input size, normalisation, intended use, operating point and calibration) goes into the ONNX
file's metadata so that the exported model explains itself. A calibrated checkpoint's temperature is
part of the graph: its ``logits`` are already divided by T, so a softmax over them gives the calibrated
probabilities, and the stored threshold applies to those; so is an adapted checkpoint's move to the
site's share of pneumonia (``cxrdistill adapt``).
Export is verified: ONNX Runtime must reproduce PyTorch's logits on random input, otherwise the file is not kept.

A checkpoint with a fitted out-of-distribution check (:mod:`cxrdistill.deployment.ood`) exports a second
output, ``ood_score``, computed in the graph from the same forward pass, and its record (threshold
included) goes into the metadata under ``ood``; the verification covers the score too.

AlexNet below 224 px pools a small feature map *up* to 6x6 (``AdaptiveAvgPool2d``), which the ONNX exporter
only handles when the input size is a multiple of the output size. For export such a pooling layer becomes
the same averaging written as two constant matrices (:class:`FixedAdaptiveAvgPool2d`): exact for the model's
one input size, and the verification above checks it against the original network.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrdistill.data.preprocess import Preprocessing
from cxrdistill.deployment.model_card import write_model_card
from cxrdistill.deployment.ood import OOD_KEY, load_ood
from cxrdistill.runtime.served import load_served_model

OPSET = 17


class FixedAdaptiveAvgPool2d(nn.Module):
    """``adaptive_avg_pool2d`` for one known input size as ``rows @ x @ cols.T``: exportable for any sizes."""

    def __init__(self, input_size: tuple[int, int], output_size: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("rows", _pooling_matrix(input_size[0], output_size[0]))
        self.register_buffer("cols", _pooling_matrix(input_size[1], output_size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows @ x @ self.cols.T


def _pooling_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """Row ``i`` averages PyTorch's adaptive bin ``[floor(i*in/out), ceil((i+1)*in/out))``."""
    matrix = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -(-(i + 1) * size_in // size_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def make_exportable(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """Replace the adaptive poolings the ONNX exporter refuses (input size not a multiple of the output size)."""
    seen: dict[str, tuple[int, int]] = {}

    def record_input_size(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            seen[name] = tuple(args[0].shape[-2:])

        return hook

    hooks = [module.register_forward_hook(record_input_size(name))
             for name, module in model.named_modules() if isinstance(module, nn.AdaptiveAvgPool2d)]
    with torch.no_grad():
        model(example)
    for hook in hooks:
        hook.remove()
    for name, (height, width) in seen.items():
        size = model.get_submodule(name).output_size
        output = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        if None not in output and (height % output[0] or width % output[1]):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, FixedAdaptiveAvgPool2d((height, width), output))
    return model


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
    scored = load_ood(checkpoint, model, metadata)
    outputs = ["logits"] if scored is None else ["logits", "ood_score"]
    network = model if scored is None else scored
    with torch.no_grad():
        expected = network(example)
    expected = [expected.numpy()] if scored is None else [value.numpy() for value in expected]
    exportable = make_exportable(network, example)
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        staged = Path(scratch) / out.name
        torch.onnx.export(
            exportable, (example,), staged, input_names=["image"], output_names=outputs,
            dynamic_axes={"image": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}, opset_version=OPSET,
            dynamo=False,
        )
        graph = onnx.load(staged)
        for key in ("architecture", "input_size", "class_names", "positive_class", "normalization",
                    "intensity_normalization", "intended_use"):
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, json.dumps(metadata.get(key, "none"))
        entry = graph.metadata_props.add()
        entry.key, entry.value = "border_crop", json.dumps(Preprocessing.of(metadata).border_crop)
        entry = graph.metadata_props.add()  # how to make the "image" input from a file, for any runtime
        entry.key, entry.value = "preprocessing", json.dumps(Preprocessing.of(metadata).record())
        for key in ("operating_point", "calibration", "prior_shift", "adaptation", OOD_KEY,
                    "synthetic_data"):  # absent unless fitted (or from older checkpoints)
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, json.dumps(metadata.get(key))
        onnx.save(graph, staged)
        session = onnxruntime.InferenceSession(str(staged), providers=["CPUExecutionProvider"])
        actual = session.run(outputs, {"image": example.numpy()})
        difference = float(np.max(np.abs(actual[0] - expected[0])))
        if difference > tolerance:
            raise RuntimeError(f"ONNX Runtime differs from PyTorch by {difference:.2e} (> {tolerance}); not exported")
        if scored is not None:  # distances run to thousands: compared relative to their size
            score_difference = float(np.max(np.abs(actual[1] - expected[1]) / np.maximum(1.0, np.abs(expected[1]))))
            if score_difference > tolerance:
                raise RuntimeError(f"ONNX Runtime's ood_score differs from PyTorch's by {score_difference:.2e} "
                                   f"(relative, > {tolerance}); not exported")
        staged.replace(out)
    write_model_card(checkpoint, out)
    return ExportResult(out, difference, out.stat().st_size / 1e6)

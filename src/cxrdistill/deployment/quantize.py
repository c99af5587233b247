"""INT8 models for CPUs: ONNX Runtime static quantisation, calibrated on the checkpoint's own training images.

Static quantisation fixes every activation's int8 scale beforehand from calibration images, so convolutions
*and* fully connected layers run as integer kernels (dynamic quantisation, by contrast, leaves AlexNet's
large FC layers in float32 on this path). The calibration images are a seeded sample of the checkpoint's
training split, decoded and normalised exactly as :func:`cxrdistill.deployment.predict.predict_files`
does at inference. The graph is first prepared with ONNX Runtime's ``quant_pre_process`` (shape inference
and graph optimisation: BatchNorm folded, Conv+ReLU fused), as its documentation recommends, then
quantised in the QDQ format with per-channel weight scales. The int8 file carries the fp32 file's metadata
(classes, input size, normalisation, operating point, calibration) plus a ``quantization`` entry, so
``predict`` uses it unchanged. Accuracy is checked, not assumed: :func:`int8_agreement` runs both files
over labelled images and reports each one's metrics and how often their decisions agree.
"""

from __future__ import annotations

import dataclasses
import json
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cxrdistill.config import DataConfig
from cxrdistill.data.io import UnreadableImageError
from cxrdistill.data.layout import ImageRecord, scan_dataset
from cxrdistill.data.preprocess import Preprocessing
from cxrdistill.deployment.export import ExportResult, export_onnx
from cxrdistill.deployment.predict import Predictor
from cxrdistill.errors import InvalidArgumentError
from cxrdistill.evaluation.evaluate import external_set_names, local_data_config, records_for
from cxrdistill.evaluation.metrics import binary_metrics
from cxrdistill.evaluation.operating_point import DEFAULT_THRESHOLD, stored_threshold
from cxrdistill.runtime.checkpoint import load_checkpoint

INT8_SUFFIX = ".int8.onnx"
DEFAULT_CALIBRATION_IMAGES = 300
CALIBRATION_BATCH = 16
QUANT_FORMATS = ("qdq", "qoperator")


@dataclass(frozen=True)
class QuantizationSettings:
    """How to quantise; the defaults are the recommended ones (the benchmark measures the alternatives)."""

    per_channel: bool = True
    """One weight scale per output channel (more accurate for convolutions) instead of one per tensor."""
    quant_format: str = "qdq"
    """``qdq``: QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into int8 kernels;
    ``qoperator``: explicit QLinearConv/QLinearMatMul operators."""
    op_types: tuple[str, ...] | None = None
    """Operator types to quantise (e.g. ``("Conv",)`` leaves the fully connected layers in fp32); ``None``: all."""
    exclude_nodes: tuple[str, ...] = ()
    """Node names (of the pre-processed graph) to keep in fp32, e.g. the first convolution."""
    reduce_range: bool = False
    """7-bit weights: avoids int16 saturation of the u8s8 kernels on x86 CPUs without VNNI, at some accuracy."""

    def __post_init__(self) -> None:
        if self.quant_format not in QUANT_FORMATS:
            raise InvalidArgumentError(f"quant_format must be one of {list(QUANT_FORMATS)}, got {self.quant_format!r}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Int8ExportResult:
    fp32: ExportResult
    path: Path
    size_mb: float
    calibration_images: int
    calibration_source: str
    settings: QuantizationSettings = field(default_factory=QuantizationSettings)

    @property
    def size_ratio(self) -> float:
        """int8 file size over the fp32 file's."""
        return self.size_mb / self.fp32.size_mb


@dataclass(frozen=True)
class SetAgreement:
    """fp32 and int8 on one labelled set: each model's metrics at one threshold and how their outputs differ."""

    name: str
    count: int
    threshold: float
    fp32: dict[str, float]
    int8: dict[str, float]
    agreement: float
    """Share of images with the same decision at ``threshold``."""
    max_abs_prob_difference: float
    mean_abs_prob_difference: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def int8_path(fp32_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` beside it."""
    fp32_path = Path(fp32_path)
    return fp32_path.with_name(fp32_path.name.removesuffix(".onnx") + INT8_SUFFIX)


def training_data(checkpoint_metadata: dict, data: str | Path | None) -> tuple[Path, DataConfig]:
    """The folder the checkpoint was trained on (``data`` overrides it, e.g. on another machine) and its settings."""
    data_config = local_data_config(checkpoint_metadata)
    root = data if data is not None else data_config.root
    if root is None or not Path(root).is_dir():
        raise InvalidArgumentError(
            f"the checkpoint's training data ({root}) is not on this machine; give the folder with --calibration-data"
        )
    return Path(root), data_config


def calibration_files(root: Path, data_config: DataConfig, count: int, seed: int = 0) -> list[Path]:
    """A seeded sample of ``count`` images of ``root``'s training split (the whole folder if it has no splits)."""
    if count < 1:
        raise InvalidArgumentError(f"calibration_images must be at least 1, got {count}")
    records, _ = records_for(root, "train", data_config)
    chosen = random.Random(seed).sample(records, min(count, len(records)))
    return sorted(r.path for r in chosen)


class CalibrationReader(Protocol):
    """What ONNX Runtime's calibrator reads: input batches until ``None`` (its ``CalibrationDataReader``)."""

    def get_next(self) -> dict[str, np.ndarray] | None: ...

    def rewind(self) -> None: ...


class _CountingReader:
    """Counts the images a reader hands out, so an unreadable calibration set is noticed."""

    def __init__(self, reader: CalibrationReader) -> None:
        self.reader, self.images = reader, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = self.reader.get_next()
        if batch is not None:
            self.images += len(batch["image"])
        return batch

    def rewind(self) -> None:
        self.reader.rewind()
        self.images = 0


class ImageCalibrationReader:
    """Feeds calibration images to ONNX Runtime's calibrator in batches; unreadable files are skipped.

    A ``CalibrationDataReader`` by duck typing (``get_next``), so onnxruntime is imported only when quantising."""

    def __init__(self, files: Sequence[Path], preprocessing: Preprocessing,
                 batch_size: int = CALIBRATION_BATCH) -> None:
        self.files, self.preprocessing, self.batch_size = list(files), preprocessing, batch_size
        self._position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        while self._position < len(self.files):
            chunk = self.files[self._position : self._position + self.batch_size]
            self._position += len(chunk)
            images = []
            for file in chunk:
                try:
                    images.append(self.preprocessing(file).numpy())
                except UnreadableImageError:
                    continue
            if images:
                return {"image": np.stack(images)}
        return None

    def rewind(self) -> None:
        self._position = 0


def quantize_onnx(fp32_path: str | Path, out: str | Path, reader: CalibrationReader,
                  settings: QuantizationSettings = QuantizationSettings(),
                  extra_metadata: dict | None = None) -> tuple[Path, int]:
    """Statically quantise ``fp32_path`` into ``out`` with ``reader``'s images; metadata is carried over.

    Returns the file and the number of calibration images used."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out, counting = Path(out), _CountingReader(reader)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        prepared, staged = Path(scratch) / "prepared.onnx", Path(scratch) / out.name
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared), str(staged), counting,
            quant_format=QuantFormat.QDQ if settings.quant_format == "qdq" else QuantFormat.QOperator,
            per_channel=settings.per_channel, reduce_range=settings.reduce_range,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=list(settings.op_types) if settings.op_types else None,
            nodes_to_exclude=list(settings.exclude_nodes),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        if counting.images == 0:
            raise InvalidArgumentError("none of the calibration images could be read")
        graph = onnx.load(staged)
        source = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
        source["quantization"] = json.dumps({"method": "onnxruntime static", **settings.as_dict(),
                                             "calibration_images": counting.images, **(extra_metadata or {})})
        del graph.metadata_props[:]
        for key, value in source.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(graph, staged)
        staged.replace(out)
    return out, counting.images


def export_int8(checkpoint: str | Path, out: str | Path, calibration_data: str | Path | None = None,
                calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
                settings: QuantizationSettings = QuantizationSettings(), seed: int = 0) -> Int8ExportResult:
    """Export ``checkpoint`` to ``out`` (fp32, verified) and its int8 version beside it (``*.int8.onnx``).

    Calibration uses ``calibration_images`` images of the checkpoint's training split (``calibration_data``
    overrides the folder recorded in the checkpoint).
    """
    metadata = load_checkpoint(checkpoint)["metadata"]
    root, data_config = training_data(metadata, calibration_data)
    files = calibration_files(root, data_config, calibration_images, seed)
    fp32 = export_onnx(checkpoint, out)
    reader = ImageCalibrationReader(files, Preprocessing.of(metadata))
    path, used = quantize_onnx(fp32.path, int8_path(fp32.path), reader, settings, {"calibration_data": str(root)})
    return Int8ExportResult(fp32, path, path.stat().st_size / 1e6, used, str(root), settings)


def scored_by_both(fp32: Predictor, int8: Predictor, records: Sequence[ImageRecord],
                   batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and PNEUMONIA probabilities of both models for the readable ``records``; each image decoded once."""
    labels, inputs = [], []
    for record in records:
        try:
            inputs.append(fp32.preprocessing(record.path))
        except UnreadableImageError:
            continue
        labels.append(record.label)
    p_fp32, p_int8 = [], []
    for start in range(0, len(inputs), batch_size):
        batch = torch.stack(inputs[start : start + batch_size])
        p_fp32 += fp32.probabilities(batch)
        p_int8 += int8.probabilities(batch)
    return np.array(labels), np.array(p_fp32), np.array(p_int8)


def agreement_at(name: str, labels: np.ndarray, p_fp32: np.ndarray, p_int8: np.ndarray,
                 threshold: float) -> SetAgreement:
    """fp32 vs int8 metrics, decision agreement and probability differences at one threshold."""
    difference = np.abs(p_fp32 - p_int8)
    return SetAgreement(
        name=name, count=len(labels), threshold=threshold,
        fp32=binary_metrics(labels, p_fp32, threshold), int8=binary_metrics(labels, p_int8, threshold),
        agreement=float(np.mean((p_fp32 >= threshold) == (p_int8 >= threshold))),
        max_abs_prob_difference=float(difference.max()), mean_abs_prob_difference=float(difference.mean()),
    )


def int8_agreement(checkpoint: str | Path, fp32_path: str | Path, int8_model: str | Path,
                   data: str | Path | None = None, external: Sequence[str | Path] = ()) -> list[SetAgreement]:
    """fp32 vs int8 on the checkpoint's validation split and on each external set (the checkpoint's
    ``data.external`` plus ``external``), at the stored threshold and at 0.5."""
    metadata = load_checkpoint(checkpoint)["metadata"]
    root, data_config = training_data(metadata, data)
    sets: dict[str, list[ImageRecord]] = {}
    if "train" in scan_dataset(root):
        sets["val"] = records_for(root, "val", data_config)[0]
    existing = [e for e in [*data_config.external, *external] if Path(e).is_dir()]
    for set_name, folder in external_set_names(existing).items():
        sets[set_name] = records_for(folder, "test", data_config)[0]
    thresholds = sorted({DEFAULT_THRESHOLD, stored_threshold(metadata) or DEFAULT_THRESHOLD})
    fp32, int8 = Predictor(fp32_path), Predictor(int8_model)
    agreements = []
    for set_name, records in sets.items():
        labels, p_fp32, p_int8 = scored_by_both(fp32, int8, records)
        if len(labels) == 0:
            raise InvalidArgumentError(f"none of the {len(records)} images of {set_name} could be read")
        agreements += [agreement_at(set_name, labels, p_fp32, p_int8, threshold) for threshold in thresholds]
    return agreements


def agreement_rows(agreements: Sequence[SetAgreement], metrics: Sequence[str] = ("accuracy", "sensitivity",
                   "specificity", "roc_auc")) -> list[dict[str, Any]]:
    """One row per set and threshold: fp32 and int8 side by side, their difference and the decision agreement."""
    rows = []
    for a in agreements:
        row: dict[str, Any] = {"set": a.name, "images": a.count, "threshold": a.threshold}
        for metric in metrics:
            row[f"{metric} fp32"], row[f"{metric} int8"] = a.fp32[metric], a.int8[metric]
        row["accuracy change (points)"] = 100 * (a.int8["accuracy"] - a.fp32["accuracy"])
        row["agreement"], row["max |dp|"] = a.agreement, a.max_abs_prob_difference
        rows.append(row)
    return rows


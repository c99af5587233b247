"""Evaluate a checkpoint on a split or an external folder: metrics with 95 % CIs, per-image CSV, plots.

Everything needed comes from the checkpoint itself (architecture, input size, normalisation, class
order, the data settings it was trained with), so the same call works on the run's own test split
and on a bare ``NORMAL/`` + ``PNEUMONIA/`` folder of full-size originals from elsewhere.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from cxrdistill.config import DataConfig
from cxrdistill.data.dataset import build_dataset, default_num_workers, resolve_split
from cxrdistill.data.layout import CLASS_NAMES, DatasetLayoutError, ImageRecord, scan_dataset
from cxrdistill.evaluation.metrics import (
    MetricEstimate,
    binary_metrics,
    bootstrap_metrics,
    confusion,
    predict_labels,
)
from cxrdistill.evaluation.plots import plot_confusion, plot_reliability, plot_roc
from cxrdistill.evaluation.predict import Predictions, predict
from cxrdistill.files import atomic_write_json
from cxrdistill.training.checkpoint import (
    check_class_names,
    experiment_config,
    load_checkpoint,
    model_from_checkpoint,
)
from cxrdistill.training.device import resolve_device, resolve_precision


@dataclass
class EvaluationReport:
    checkpoint: Path
    data: str
    metrics: dict[str, MetricEstimate]
    confusion: list[list[int]]
    count: int
    out_dir: Path

    def as_dict(self) -> dict:
        return {
            "checkpoint": str(self.checkpoint),
            "data": self.data,
            "count": self.count,
            "confusion": self.confusion,
            "metrics": {name: dataclasses.asdict(value) for name, value in self.metrics.items()},
        }


def records_for(data: Path, split: str, data_config: DataConfig) -> tuple[list[ImageRecord], str]:
    """A bare class folder is used whole; a split layout uses the run's saved patient-wise split."""
    found = scan_dataset(data)
    if "" in found:
        return found[""], str(data)
    resolved = resolve_split(dataclasses.replace(data_config, root=str(data), max_per_class=None), data)
    if split not in resolved.splits:
        raise DatasetLayoutError(f"{data} has no {split!r} split; available: {sorted(resolved.splits)}")
    return resolved[split], f"{data}:{split}"


def evaluate_predictions(predictions: Predictions, n_bootstrap: int, seed: int = 0) -> dict[str, MetricEstimate]:
    prob = predictions.prob_positive
    estimates = bootstrap_metrics(predictions.labels, prob, n_resamples=n_bootstrap, seed=seed)
    point = binary_metrics(predictions.labels, prob)
    return {name: dataclasses.replace(estimates[name], value=point[name]) for name in point}


def write_predictions_csv(path: Path, records: list[ImageRecord], predictions: Predictions) -> None:
    prob = predictions.prob_positive
    predicted = predict_labels(prob)
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "patient", "label", "prob_pneumonia", "predicted", "correct"])
        for record, p, guess in zip(records, prob, predicted, strict=True):
            writer.writerow([record.path, record.patient, CLASS_NAMES[record.label], f"{p:.6f}",
                             CLASS_NAMES[int(guess)], int(guess == record.label)])


def predict_checkpoint(
    checkpoint: str | Path, data: str | Path, split: str = "test", device: str = "auto",
    batch_size: int | None = None, progress: bool = True,
) -> tuple[list[ImageRecord], Predictions, dict, str]:
    """Records, predictions, checkpoint metadata and a description of the data evaluated."""
    checkpoint, data = Path(checkpoint), Path(data)
    payload = load_checkpoint(checkpoint)
    check_class_names(payload["metadata"], str(checkpoint))
    config = experiment_config(payload)
    model, metadata = model_from_checkpoint(checkpoint)
    records, description = records_for(data, split, config.data)
    dataset = build_dataset(records, config.data, int(metadata["input_size"]), augment=False, progress=progress)
    workers = default_num_workers(config.data.num_workers)
    loader = DataLoader(dataset, batch_size=batch_size or config.data.batch_size, num_workers=workers)
    precision = resolve_precision(resolve_device(device), "auto")
    predictions = predict(model.to(precision.device), loader, precision, progress=progress, desc="evaluate")
    return dataset.records, predictions, metadata, description


def point_metrics(checkpoint: str | Path, data: str | Path, split: str = "test", progress: bool = False) -> dict:
    """Metrics without intervals or files: what sweeps and comparisons need for each run."""
    _, predictions, _, _ = predict_checkpoint(checkpoint, data, split, progress=progress)
    return binary_metrics(predictions.labels, predictions.prob_positive)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    split: str = "test",
    out_dir: str | Path | None = None,
    n_bootstrap: int = 1000,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool = True,
) -> EvaluationReport:
    """Metrics with bootstrap CIs, ``predictions.csv``, ``metrics.json`` and three plots in ``out_dir``."""
    checkpoint, data = Path(checkpoint), Path(data)
    records, predictions, metadata, description = predict_checkpoint(
        checkpoint, data, split, device, batch_size, progress
    )
    metrics = evaluate_predictions(predictions, n_bootstrap)
    matrix = confusion(predictions.labels, predictions.prob_positive)

    out = Path(out_dir) if out_dir else checkpoint.parent / f"eval-{data.name}-{split}"
    out.mkdir(parents=True, exist_ok=True)
    report = EvaluationReport(checkpoint, description, metrics, matrix.tolist(), len(records), out)
    atomic_write_json(out / "metrics.json", report.as_dict())
    write_predictions_csv(out / "predictions.csv", records, predictions)
    title = f"{metadata['architecture']} on {description}"
    plot_roc(predictions.labels, predictions.prob_positive, out / "roc.png", title=f"ROC — {title}")
    plot_confusion(np.asarray(matrix), out / "confusion.png", title=f"Confusion — {title}")
    plot_reliability(predictions.labels, predictions.prob_positive, out / "reliability.png",
                     title=f"Reliability — {title}")
    return report

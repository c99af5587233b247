"""Evaluate a checkpoint on a split or an external folder: metrics with 95 % CIs, per-image CSV, plots.

Everything needed comes from the checkpoint itself (architecture, input size, normalisation, class
order, the data settings it was trained with, its temperature and operating threshold), so the same
call works on the run's own test split, on a bare ``NORMAL/`` + ``PNEUMONIA/`` folder of full-size
originals from elsewhere, and on a Kermany root that holds only ``test/``.

Metrics are always reported at the conventional threshold 0.5 and, when the checkpoint stores one, at
its operating threshold (chosen by :mod:`cxrdistill.evaluation.operating_point`). Intervals are 95 % bootstrap
intervals that resample patients, since several films of one patient are not independent.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import DataLoader

from cxrdistill.config import DataConfig, config_from_dict
from cxrdistill.data.cache import user_cache_dir
from cxrdistill.data.dataset import build_dataset, default_num_workers, resolve_split
from cxrdistill.data.layout import CLASS_NAMES, DatasetLayoutError, ImageRecord, scan_dataset
from cxrdistill.errors import CxrDistillError, InvalidArgumentError
from cxrdistill.evaluation.masking import masked_model
from cxrdistill.evaluation.metrics import (
    MetricEstimate,
    binary_metrics,
    bootstrap_metrics,
    confusion,
    predict_labels,
)
from cxrdistill.evaluation.operating_point import DEFAULT_THRESHOLD, stored_threshold
from cxrdistill.evaluation.plots import plot_confusion, plot_reliability, plot_roc
from cxrdistill.evaluation.predict import Predictions, predict
from cxrdistill.evaluation.tables import write_table
from cxrdistill.files import atomic_write_json, atomic_write_text, text_digest
from cxrdistill.runtime import distributed
from cxrdistill.runtime.checkpoint import check_class_names
from cxrdistill.runtime.device import resolve_device, resolve_precision
from cxrdistill.runtime.served import load_served_model, stored_temperature

RUN_EVALUATION_FILE = "evaluation.json"
TABLE_METRICS: tuple[str, ...] = ("accuracy", "sensitivity", "specificity", "roc_auc", "loss", "ece")


class RunEvaluationMissingError(CxrDistillError, FileNotFoundError):
    """A run folder without the ``evaluation.json`` that training writes (an interrupted or older run)."""


class CalibrationImagesError(CxrDistillError, ValueError):
    """A report asked for on the very images that calibrated the checkpoint (its temperature and threshold)."""


CALIBRATION_IMAGES_MARK = " [CALIBRATION IMAGES: the temperature and threshold were fitted on them; optimistic]"
"""Appended to the description of a report on the calibration images, when it was explicitly allowed."""


def image_set(keys: Sequence[str], folder: str | Path) -> dict[str, Any]:
    """Which images these are, without a path: the digest of their sorted content hashes, folder name, count.

    Content hashes (not file names) identify the set wherever the folder is copied or whatever it is called.
    """
    return {"digest": text_digest(sorted(keys)), "folder": Path(folder).name, "count": len(keys)}

@dataclass
class ThresholdedMetrics:
    """Every metric (with its 95 % interval) and the confusion matrix at one decision threshold."""

    threshold: float
    rule: str
    """How the threshold came about: ``"0.5"``, or e.g. ``"youden on val"`` for a stored operating point."""
    metrics: dict[str, MetricEstimate]
    confusion: list[list[int]]

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "rule": self.rule, "confusion": self.confusion,
                "metrics": {name: dataclasses.asdict(value) for name, value in self.metrics.items()}}


@dataclass
class SetEvaluation:
    """One evaluation set: what it is, how big, and its metrics at 0.5 and at the stored operating point."""

    name: str
    data: str
    count: int
    patients: int
    results: list[ThresholdedMetrics]

    def as_dict(self) -> dict:
        return {"name": self.name, "data": self.data, "count": self.count, "patients": self.patients,
                "results": [result.as_dict() for result in self.results]}


@dataclass
class EvaluationReport:
    checkpoint: Path
    evaluation: SetEvaluation
    operating_point: dict | None
    temperature: float
    out_dir: Path
    calibration_images: bool = False
    """Reported on the images that calibrated the checkpoint (allowed explicitly; the description says so)."""

    @property
    def data(self) -> str:
        return self.evaluation.data

    @property
    def count(self) -> int:
        return self.evaluation.count

    @property
    def metrics(self) -> dict[str, MetricEstimate]:
        """Metrics at threshold 0.5."""
        return self.evaluation.results[0].metrics

    @property
    def confusion(self) -> list[list[int]]:
        """Confusion matrix at threshold 0.5 (rows true NORMAL, PNEUMONIA)."""
        return self.evaluation.results[0].confusion

    @property
    def at_operating_point(self) -> ThresholdedMetrics | None:
        return self.evaluation.results[1] if len(self.evaluation.results) > 1 else None

    def as_dict(self) -> dict:
        point = self.at_operating_point
        return {
            "checkpoint": str(self.checkpoint), "data": self.data, "count": self.count,
            "patients": self.evaluation.patients, "temperature": self.temperature,
            "operating_point": self.operating_point,
            "confusion": self.confusion,
            "metrics": {name: dataclasses.asdict(value) for name, value in self.metrics.items()},
            "at_operating_point": point.as_dict() if point else None,
            "calibration_images": self.calibration_images,
        }


def records_for(data: Path, split: str, data_config: DataConfig) -> tuple[list[ImageRecord], str]:
    """The images to evaluate and a description of them.

    A bare class folder is used whole; a root without ``train/`` (e.g. one holding only ``test/``) uses its
    ``split`` folder as it is; a training root uses the run's saved patient-wise split.
    """
    found = scan_dataset(data)
    if "" in found:
        return found[""], str(data)
    if "train" not in found:
        if split not in found:
            raise DatasetLayoutError(f"{data} has no {split}/ folder; available: {sorted(found)}")
        return found[split], f"{data}:{split}"
    resolved = resolve_split(dataclasses.replace(data_config, root=str(data), max_per_class=None), data)
    if split not in resolved.splits:
        raise DatasetLayoutError(f"{data} has no {split!r} split; available: {sorted(resolved.splits)}")
    return resolved[split], f"{data}:{split}"


def patient_bootstrap(
    labels: np.ndarray, prob_positive: np.ndarray, patients: Sequence[str], threshold: float, n_bootstrap: int,
    seed: int = 0,
) -> dict[str, MetricEstimate]:
    """Bootstrap intervals resampling patients (whole clusters of images): several films of one child are
    not independent evidence."""
    return bootstrap_metrics(labels, prob_positive, threshold=threshold, n_resamples=n_bootstrap, seed=seed,
                             groups=list(patients))


def thresholded_metrics(
    records: list[ImageRecord], predictions: Predictions, threshold: float, rule: str, n_bootstrap: int,
    seed: int = 0,
) -> ThresholdedMetrics:
    labels, prob = predictions.labels, predictions.prob_positive
    metrics = patient_bootstrap(labels, prob, [r.patient for r in records], threshold, n_bootstrap, seed)
    return ThresholdedMetrics(threshold, rule, metrics, confusion(labels, prob, threshold).tolist())


def operating_rule(metadata: dict) -> str:
    point = metadata["operating_point"]
    return f"{point['policy']} on {point['chosen_on']}"


def evaluate_set(
    name: str, description: str, records: list[ImageRecord], predictions: Predictions, metadata: dict,
    n_bootstrap: int, seed: int = 0,
) -> SetEvaluation:
    """Metrics at 0.5 and, when the checkpoint stores one, at its operating threshold."""
    results = [thresholded_metrics(records, predictions, DEFAULT_THRESHOLD, f"{DEFAULT_THRESHOLD:g}", n_bootstrap,
                                   seed)]
    threshold = stored_threshold(metadata)
    if threshold is not None:
        results.append(thresholded_metrics(records, predictions, threshold, operating_rule(metadata), n_bootstrap,
                                           seed))
    return SetEvaluation(name, description, len(records), len({r.patient for r in records}), results)


def predictions_csv(records: list[ImageRecord], predictions: Predictions, threshold: float | None) -> str:
    """Per image: probability, decision and correctness at 0.5, and the decision at the operating threshold."""
    prob = predictions.prob_positive
    at_half = predict_labels(prob)
    at_point = predict_labels(prob, threshold) if threshold is not None else [None] * len(prob)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["path", "patient", "label", "prob_pneumonia", "predicted", "correct",
                     "predicted_at_operating_point"])
    for record, p, guess, decision in zip(records, prob, at_half, at_point, strict=True):
        writer.writerow([record.path, record.patient, CLASS_NAMES[record.label], f"{p:.6f}", CLASS_NAMES[int(guess)],
                         int(guess == record.label), "" if decision is None else CLASS_NAMES[int(decision)]])
    return buffer.getvalue()


def predict_records(
    model: nn.Module, metadata: dict, data_config: DataConfig, records: list[ImageRecord], device: str = "auto",
    batch_size: int | None = None, progress: bool = True,
) -> tuple[list[ImageRecord], Predictions]:
    """Run ``model`` over ``records`` (unreadable images are skipped with a warning); returns those kept.

    Under ``torchrun`` every rank must call it: each predicts a share and all receive every prediction.
    """
    dataset = build_dataset(records, data_config, int(metadata["input_size"]), augment=False, progress=progress)
    workers = default_num_workers(data_config.num_workers)
    loader = DataLoader(dataset, batch_size=batch_size or data_config.batch_size, num_workers=workers)
    precision = resolve_precision(resolve_device(device), "auto")
    predictions = predict(model.to(precision.device), loader, precision, progress=progress, desc="evaluate",
                          across_ranks=True)
    return dataset.records, predictions


def load_for_evaluation(
    checkpoint: str | Path, cache_dir: str | Path | None = None, local_data: DataConfig | None = None,
) -> tuple[nn.Module, dict, DataConfig]:
    """The served model (stored temperature applied), its metadata and the data settings to read images with.

    The stored cache and split-file locations are the training machine's: they are replaced by ``cache_dir``
    (default: this user's cache folder, :func:`user_cache_dir`). The stored split settings (seed, fractions)
    are kept: they say which images of a training root the model saw. ``local_data`` (a run's own settings,
    right after training on this machine) is used as it is instead.
    """
    model, metadata = load_served_model(checkpoint)
    check_class_names(metadata, str(checkpoint))
    return model, metadata, local_data or local_data_config(metadata, cache_dir)


def local_data_config(metadata: dict, cache_dir: str | Path | None = None) -> DataConfig:
    """A checkpoint's data settings with this machine's cache (``cache_dir``, default :func:`user_cache_dir`) in
    place of the stored cache and split-file locations."""
    stored = config_from_dict(metadata["config"]).data
    return dataclasses.replace(stored, cache_dir=str(cache_dir or user_cache_dir()), split_file=None)


def predict_checkpoint(
    checkpoint: str | Path, data: str | Path, split: str = "test", device: str = "auto",
    batch_size: int | None = None, progress: bool = True, mask: str | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[list[ImageRecord], Predictions, dict, str]:
    """Records, predictions, checkpoint metadata and a description of the data evaluated.

    ``mask`` (a name in :data:`~cxrdistill.evaluation.masking.MASKS`) hides part of every model input.
    """
    model, metadata, data_config = load_for_evaluation(checkpoint, cache_dir)
    model = masked_model(model, mask, metadata)
    records, description = records_for(Path(data), split, data_config)
    if mask is not None:
        description = f"{description} ({mask} masked)"
    records, predictions = predict_records(model, metadata, data_config, records, device, batch_size, progress)
    return records, predictions, metadata, description


def point_metrics(checkpoint: str | Path, data: str | Path, split: str = "test", progress: bool = False) -> dict:
    """Metrics at 0.5 without intervals or files."""
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
    mask: str | None = None,
    allow_calibration_images: bool = False,
    cache_dir: str | Path | None = None,
) -> EvaluationReport:
    """Metrics with bootstrap CIs, ``predictions.csv``, ``metrics.json`` and three plots in ``out_dir``.

    ``mask`` evaluates with part of every input hidden (:mod:`cxrdistill.evaluation.masking`). The images
    that calibrated the checkpoint (recorded in its sidecar) are refused: numbers measured where the threshold
    was chosen flatter the model. ``allow_calibration_images`` reports them, marked as such. Caches go to
    ``cache_dir`` (default: this user's cache folder), never to the checkpoint's stored one.
    """
    checkpoint, data = Path(checkpoint), Path(data)
    records, predictions, metadata, description = predict_checkpoint(
        checkpoint, data, split, device, batch_size, progress, mask, cache_dir
    )
    calibrated_on = ((metadata.get("calibration") or {}).get("images") or {}).get("digest")
    on_calibration_images = calibrated_on == image_set(predictions.keys, data)["digest"]
    if on_calibration_images and not allow_calibration_images:
        raise CalibrationImagesError(
            f"{description}: these {len(records)} images calibrated {checkpoint} (its temperature and threshold "
            f"were fitted on them), so a report on them would flatter it; report on other images (`cxrdistill "
            f"calibrate-and-evaluate` splits a folder by patient), or pass --allow-calibration-images "
            f"(allow_calibration_images=True) to report anyway, marked as such")
    if on_calibration_images:
        description += CALIBRATION_IMAGES_MARK
    masked = f"-mask-{mask}" if mask else ""
    out = Path(out_dir) if out_dir else checkpoint.parent / f"eval-{data.name}-{split}{masked}"
    return report_evaluation(checkpoint, records, predictions, metadata, description, out, n_bootstrap,
                             on_calibration_images)


def report_evaluation(
    checkpoint: Path, records: list[ImageRecord], predictions: Predictions, metadata: dict, description: str,
    out: Path, n_bootstrap: int, calibration_images: bool = False,
) -> EvaluationReport:
    """Write ``metrics.json``, ``predictions.csv`` and the plots for one evaluated set to ``out``."""
    evaluation = evaluate_set(description, description, records, predictions, metadata, n_bootstrap)
    report = EvaluationReport(checkpoint, evaluation, metadata.get("operating_point"), stored_temperature(metadata),
                              out, calibration_images)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", report.as_dict())
    atomic_write_text(out / "predictions.csv", predictions_csv(records, predictions, stored_threshold(metadata)))
    title = f"{metadata['architecture']} on {description}"
    plot_roc(predictions.labels, predictions.prob_positive, out / "roc.png", title=f"ROC — {title}")
    plot_confusion(np.asarray(report.confusion), out / "confusion.png", title=f"Confusion — {title}")
    plot_reliability(predictions.labels, predictions.prob_positive, out / "reliability.png",
                     title=f"Reliability — {title}")
    return report


def external_set_names(external: Sequence[str | Path]) -> dict[str, Path]:
    """Table names (folder names) of the external sets; two sets with one folder name are refused."""
    names: dict[str, Path] = {}
    for folder in map(Path, external):
        name = folder.name or str(folder)
        if name in names or name in ("val", "test"):
            raise InvalidArgumentError(
                f"two evaluation sets would both be called {name!r} ({names.get(name, name)} and {folder}); "
                f"give the external folders distinct names")
        names[name] = folder
    return names


def evaluate_run(
    checkpoint: str | Path, root: str | Path, external: Sequence[str | Path] = (), n_bootstrap: int = 1000,
    device: str = "auto", progress: bool = False, local_data: DataConfig | None = None,
) -> dict[str, SetEvaluation]:
    """Evaluate a run's checkpoint on its val and test splits and on each external set.

    Writes ``evaluation.json`` and ``evaluation.{csv,md}`` beside the
    checkpoint. The val split chose the operating point, so its metrics at that threshold are optimistic; it
    is listed for selection (e.g. of a temperature), the test split and the external sets are what to report.
    """
    checkpoint, root = Path(checkpoint), Path(root)
    model, metadata, data_config = load_for_evaluation(checkpoint, local_data=local_data)
    sources = {"val": (root, "val"), "test": (root, "test"),
               **{name: (folder, "test") for name, folder in external_set_names(external).items()}}
    sets: dict[str, SetEvaluation] = {}
    for name, (data, split) in sources.items():
        records, description = records_for(data, split, data_config)
        records, predictions = predict_records(model, metadata, data_config, records, device, progress=progress)
        sets[name] = evaluate_set(name, description, records, predictions, metadata, n_bootstrap)
    if distributed.is_main_process():
        write_run_evaluation(checkpoint, metadata, sets)
    return sets


def evaluation_rows(sets: dict[str, SetEvaluation], metrics: Sequence[str] = TABLE_METRICS) -> list[dict[str, Any]]:
    """One row per (set, threshold rule): the metrics with their intervals, side by side."""
    return [{"set": s.name, "images": s.count, "rule": result.rule, "threshold": result.threshold,
             **{m: result.metrics[m] for m in metrics}}
            for s in sets.values() for result in s.results]


def write_run_evaluation(checkpoint: Path, metadata: dict, sets: dict[str, SetEvaluation]) -> None:
    out = checkpoint.parent
    atomic_write_json(out / RUN_EVALUATION_FILE, {
        "checkpoint": str(checkpoint), "operating_point": metadata.get("operating_point"),
        "temperature": stored_temperature(metadata), "sets": {name: s.as_dict() for name, s in sets.items()},
    })
    write_table(evaluation_rows(sets), out, "evaluation",
                f"{checkpoint} — 95 % patient-bootstrap intervals (val chose the operating point)")


def load_run_evaluation(checkpoint: str | Path) -> dict[str, SetEvaluation]:
    """Read the ``evaluation.json`` that training wrote beside ``checkpoint``."""
    path = Path(checkpoint).parent / RUN_EVALUATION_FILE
    if not path.is_file():
        raise RunEvaluationMissingError(
            f"{path} is missing: the run was not evaluated after training; resume it to do so")
    raw = json.loads(path.read_text())
    return {
        name: SetEvaluation(
            name, entry["data"], entry["count"], entry["patients"],
            [ThresholdedMetrics(r["threshold"], r["rule"], {m: MetricEstimate(**v) for m, v in r["metrics"].items()},
                                r["confusion"]) for r in entry["results"]],
        )
        for name, entry in raw["sets"].items()
    }

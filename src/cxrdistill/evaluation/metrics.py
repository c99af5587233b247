"""Binary classification metrics for PNEUMONIA-vs-NORMAL evaluation, with uncertainty.

Everything here works on plain numpy arrays: ``labels`` holds the true classes (PNEUMONIA = 1 is the
positive class, NORMAL = 0) and ``prob_positive`` the model's probability of PNEUMONIA for each image.
An image is predicted PNEUMONIA when ``prob_positive >= threshold`` (see :func:`predict_labels`); this is
the same rule ``sklearn.metrics.roc_curve`` uses, so a threshold picked from a ROC curve reproduces its
operating point exactly.

Besides point metrics (:func:`binary_metrics`) the module gives percentile-bootstrap confidence intervals
over test images or, given each image's patient, over patients (:func:`bootstrap_metrics`), and a mean/std
summary across runs (:func:`summarize_runs`). Undefined metrics (e.g. ROC AUC on a set with one class) are
NaN with a warning instead of an exception, so that one awkward subset does not abort a whole evaluation.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "roc_auc",
    "loss",
    "ece",
)

# Number of equal-width confidence bins for the ECE reported by binary_metrics and bootstrap_metrics.
ECE_BINS = 15

# Upper bound on the number of (resample x image) weights held in memory at once during a bootstrap.
_MAX_WEIGHTS_PER_CHUNK = 2_000_000


@dataclass(frozen=True)
class MetricEstimate:
    """A point estimate with a percentile-bootstrap confidence interval ``[low, high]``."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of top-label confidence, shared by the ECE and the reliability diagram.

    ``edges`` has ``n_bins + 1`` entries; ``counts``, ``mean_confidence`` and ``accuracy`` have one entry
    per bin, and the last two are NaN for empty bins.
    """

    edges: np.ndarray
    counts: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray


def predict_labels(prob_positive: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions (1 = PNEUMONIA) using the module-wide ``prob >= threshold`` rule."""
    return (np.asarray(prob_positive, dtype=float) >= threshold).astype(np.int64)


def confusion(labels: np.ndarray, prob_positive: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """2x2 confusion matrix: rows are true [NORMAL, PNEUMONIA], columns predicted, in the same order.

    Both classes always get a row and a column, even if absent, so the layout never shifts.
    """
    y, p = check_binary_inputs(labels, prob_positive)
    _check_threshold(threshold)
    return confusion_matrix(y, predict_labels(p, threshold), labels=[0, 1])


def binary_metrics(labels: np.ndarray, prob_positive: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Compute every metric in :data:`METRIC_NAMES` for one evaluation set.

    ``accuracy``; ``sensitivity`` (recall of PNEUMONIA); ``specificity`` (recall of NORMAL); ``precision``
    (positive predictive value); ``f1``; ``roc_auc``; ``loss`` (mean binary cross-entropy, sklearn
    ``log_loss`` with ``labels=[0, 1]`` so single-class sets still work); ``ece`` (see
    :func:`expected_calibration_error`). A metric whose denominator is empty (e.g. specificity with no
    NORMAL images, AUC with one class, precision with no positive predictions) is NaN and an
    ``UndefinedMetricWarning`` says why.
    """
    y, p = check_binary_inputs(labels, prob_positive)
    _check_threshold(threshold)
    pred = predict_labels(p, threshold)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    for reason, names in _undefined_metrics(tn, fp, fn, tp).items():
        warnings.warn(
            f"{', '.join(names)} undefined: {reason}; returning NaN.", UndefinedMetricWarning, stacklevel=2
        )
    both_classes = tp + fn > 0 and tn + fp > 0
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "sensitivity": float(recall_score(y, pred, pos_label=1, zero_division=np.nan)),
        "specificity": float(recall_score(y, pred, pos_label=0, zero_division=np.nan)),
        "precision": float(precision_score(y, pred, pos_label=1, zero_division=np.nan)),
        "f1": float(f1_score(y, pred, pos_label=1, zero_division=np.nan)),
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else float("nan"),
        "loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
    }


def reliability_bins(
    labels: np.ndarray, prob_positive: np.ndarray, n_bins: int = ECE_BINS
) -> ReliabilityBins:
    """Bin images by top-label confidence into ``n_bins`` equal-width bins over [0, 1].

    The predicted class is PNEUMONIA when ``prob_positive >= 0.5`` and its confidence is
    ``max(p, 1 - p)``, so only bins above 0.5 can be populated. Bins are right-closed,
    ``(edge[k], edge[k + 1]]``, with the first bin also taking 0.
    """
    y, p = check_binary_inputs(labels, prob_positive)
    bin_index, correct, conf = _top_label(y, p, n_bins)
    counts = np.bincount(bin_index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bin_index, weights=conf, minlength=n_bins) / counts
        accuracy = np.bincount(bin_index, weights=correct, minlength=n_bins) / counts
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), counts, mean_conf, accuracy)


def expected_calibration_error(
    labels: np.ndarray, prob_positive: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """Top-label expected calibration error with equal-width bins (Guo et al., 2017).

    ECE = sum over bins of (n_bin / n) * |accuracy_bin - mean_confidence_bin|, where the confidence is
    that of the predicted class, ``max(p, 1 - p)``, not the raw PNEUMONIA probability; binning as in
    :func:`reliability_bins`. 0 means perfectly calibrated; it is a biased, bin-dependent estimate, so only
    compare values computed with the same ``n_bins`` on sets of similar size.
    """
    y, p = check_binary_inputs(labels, prob_positive)
    bin_index, correct, conf = _top_label(y, p, n_bins)
    gap = np.bincount(bin_index, weights=correct - conf, minlength=n_bins)
    return float(np.abs(gap).sum() / y.size)


def bootstrap_metrics(
    labels: np.ndarray,
    prob_positive: np.ndarray,
    threshold: float = 0.5,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | Sequence[Hashable] | None = None,
) -> dict[str, MetricEstimate]:
    """Percentile-bootstrap intervals for every metric in :data:`METRIC_NAMES`, resampling images or patients.

    Each resample draws ``len(labels)`` images with replacement; the interval is the central
    ``confidence`` mass of the resampled metric values, and ``value`` is the metric on the full set.
    With ``groups`` (the patient id of each image) it is a cluster bootstrap: each resample draws as many
    patients as there are, with replacement, and takes all images of each drawn patient. Films of one
    patient are alike, so they are not independent observations; resampling images then gives intervals
    that are too narrow, the more so the more films per patient. With one image per patient both agree.

    A resample can lack one class (likely only for small or very imbalanced sets); its undefined metrics
    (AUC, sensitivity/specificity, ...) are NaN and are skipped via ``np.nanpercentile``, so the interval
    is conditional on the metric being defined. If no resample defines a metric, its bounds are NaN.
    Results are deterministic for a given ``seed``.

    Resamples are represented as per-image multiplicity weights (a patient drawn twice gives each of its
    images weight 2), so the threshold metrics, loss and ECE are computed for all resamples at once with
    one matrix product (checked against :func:`binary_metrics` in the tests), and AUC with a weighted
    Mann-Whitney sum per resample. 1000 resamples of 800 images take about 0.1 s on one CPU core.
    """
    y, p = check_binary_inputs(labels, prob_positive)
    _check_threshold(threshold)
    _check_resampling(n_resamples, confidence)
    cluster = None if groups is None else _cluster_index(groups, y.size)
    point = binary_metrics(y, p, threshold)
    rng = np.random.default_rng(seed)
    chunks = [
        _metrics_from_weights(y, p, w, threshold) for w in bootstrap_weights(rng, y.size, n_resamples, cluster)
    ]
    return {
        name: _percentile_interval(point[name], np.concatenate([c[name] for c in chunks]), confidence)
        for name in METRIC_NAMES
    }


def summarize_runs(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of a metric across runs.

    The std of a single run is undefined (NaN), not 0: one run says nothing about the spread. A metric
    undefined (NaN) in any run makes both undefined, so that a summary never raises after hours of training.
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {arr.shape}")
    std = float(arr.std(ddof=1)) if arr.size > 1 else float("nan")
    return float(arr.mean()), std


def check_binary_inputs(labels: np.ndarray, prob_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert evaluation inputs, raising ``ValueError`` that names the problem.

    Rejects non-1-D or empty arrays, length mismatches, labels outside {0, 1} and probabilities that are
    NaN or outside [0, 1]; returns int64 labels and float probabilities. Public so that other evaluation
    code (e.g. the plots) applies exactly the same checks.
    """
    y = np.asarray(labels)
    p = np.asarray(prob_positive, dtype=float)
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(f"labels and prob_positive must be 1-D, got shapes {y.shape} and {p.shape}")
    if y.size == 0:
        raise ValueError("labels and prob_positive are empty")
    if y.size != p.size:
        raise ValueError(f"labels and prob_positive differ in length: {y.size} vs {p.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (NORMAL) or 1 (PNEUMONIA), got values {np.unique(y)[:10]}")
    if np.isnan(p).any():
        raise ValueError("prob_positive contains NaN")
    if (p < 0).any() or (p > 1).any():
        raise ValueError(f"prob_positive must lie in [0, 1], got range [{p.min()}, {p.max()}]")
    return y.astype(np.int64), p


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")


def _check_resampling(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _undefined_metrics(tn: int, fp: int, fn: int, tp: int) -> dict[str, list[str]]:
    """Map each reason a metric is undefined to the metrics it affects (empty when all are defined)."""
    reasons: dict[str, list[str]] = {}
    if tp + fn == 0:
        reasons["no PNEUMONIA (label 1) images in the set"] = ["sensitivity", "roc_auc"]
    if tn + fp == 0:
        reasons["no NORMAL (label 0) images in the set"] = ["specificity", "roc_auc"]
    if tp + fp == 0:
        names = ["precision", "f1"] if tp + fn == 0 else ["precision"]
        reasons["no image predicted PNEUMONIA at this threshold"] = names
    return reasons


def _top_label(y: np.ndarray, p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: confidence bin index, whether the predicted class is right, and its confidence."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    pred = predict_labels(p, 0.5)
    conf = np.where(pred == 1, p, 1.0 - p)
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    bin_index = np.digitize(conf, inner_edges, right=True)
    return bin_index, (pred == y).astype(float), conf


def _cluster_index(groups: np.ndarray | Sequence[Hashable], n_images: int) -> np.ndarray:
    """Each image's patient as an index 0..n_patients-1 (patients numbered in sorted order of their ids)."""
    ids = np.asarray(groups)
    if ids.shape != (n_images,):
        raise ValueError(f"groups must hold one patient id per image ({n_images}), got shape {ids.shape}")
    return np.unique(ids, return_inverse=True)[1].reshape(n_images)


def bootstrap_weights(
    rng: np.random.Generator, n: int, n_resamples: int, cluster: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """Yield (chunk, n) matrices of how often each of ``n`` images is drawn per resample, bounding memory use.

    Without ``cluster`` images are drawn; with it (the cluster index of each image) clusters are drawn and
    each image gets the count of its cluster.
    """
    n_draws = n if cluster is None else int(cluster.max()) + 1
    chunk = max(1, _MAX_WEIGHTS_PER_CHUNK // n)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        draws = rng.integers(0, n_draws, size=(size, n_draws)) + n_draws * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n_draws).reshape(size, n_draws).astype(float)
        yield counts if cluster is None else counts[:, cluster]


def _metrics_from_weights(
    y: np.ndarray, p: np.ndarray, weights: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Every metric for each row of ``weights`` (image multiplicities), NaN where undefined, no warnings.

    Equals :func:`binary_metrics` on the data with each image repeated ``weights[r, i]`` times. Everything
    but AUC is a weighted sum of per-image terms, so one matrix product serves all resamples: the four
    confusion cells, the cross-entropy (clipped like sklearn's ``log_loss``) and the per-bin ECE gaps.
    """
    pred = predict_labels(p, threshold)
    eps = np.finfo(float).eps
    bin_index, correct, conf = _top_label(y, p, ECE_BINS)
    per_image = np.zeros((y.size, 5 + ECE_BINS))
    per_image[:, :4] = np.stack(
        [(y == 0) & (pred == 0), (y == 0) & (pred == 1), (y == 1) & (pred == 0), (y == 1) & (pred == 1)],
        axis=1,
    )
    per_image[:, 4] = -np.log(np.clip(np.where(y == 1, p, 1.0 - p), eps, 1.0 - eps))
    per_image[np.arange(y.size), 5 + bin_index] = correct - conf
    sums = weights @ per_image
    tn, fp, fn, tp = sums[:, :4].T
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "accuracy": (tp + tn) / total,
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "precision": tp / (tp + fp),
            "f1": 2 * tp / (2 * tp + fp + fn),
            "loss": sums[:, 4] / total,
            "ece": np.abs(sums[:, 5:]).sum(axis=1) / total,
        }
        out["roc_auc"] = weighted_roc_auc(y, p, weights)
    return out


def weighted_roc_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for each row of ``weights`` at once, NaN where a row lacks a class.

    The area under the trapezoidal ROC curve (what ``roc_auc_score`` computes) is the Mann-Whitney
    statistic: the weighted share of (PNEUMONIA, NORMAL) pairs ranked the right way round, a tie counting
    one half. Summing the weights of each class per distinct score, in score order, gives it for every
    resample with array operations, about 100x faster than one ``roc_auc_score`` call per resample
    (``benchmarks/bench_bootstrap.py``; the tests check both agree, ties included).
    """
    order = np.argsort(p, kind="stable")
    sorted_p = p[order]
    level_starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    sorted_weights, sorted_y = weights[:, order], y[order]
    negatives = np.add.reduceat(sorted_weights * (sorted_y == 0), level_starts, axis=1)
    positives = np.add.reduceat(sorted_weights * (sorted_y == 1), level_starts, axis=1)
    negatives_below = np.cumsum(negatives, axis=1) - negatives
    right_pairs = (positives * (negatives_below + 0.5 * negatives)).sum(axis=1)
    return right_pairs / (positives.sum(axis=1) * negatives.sum(axis=1))


def _percentile_interval(value: float, samples: np.ndarray, confidence: float) -> MetricEstimate:
    """Central percentile interval of bootstrap samples, ignoring NaN (undefined) resamples."""
    if np.isnan(samples).all():
        return MetricEstimate(value, float("nan"), float("nan"))
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.nanpercentile(samples, [tail, 100.0 - tail])
    return MetricEstimate(value, float(low), float(high))

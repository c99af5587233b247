"""Tests for cxrdistill.evaluation.metrics and cxrdistill.evaluation.plots on small hand-checkable data."""

from __future__ import annotations

import csv
import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

from cxrdistill.evaluation.metrics import (
    METRIC_NAMES,
    MetricEstimate,
    _metrics_from_weights,
    binary_metrics,
    bootstrap_metrics,
    confusion,
    expected_calibration_error,
    reliability_bins,
    summarize_runs,
)
from cxrdistill.evaluation.plots import plot_confusion, plot_metric_curves, plot_reliability, plot_roc
from cxrdistill.experiments.compare import COMPARED_METRICS, Comparison, summarize, write_results

# Ten images: 4 PNEUMONIA, 6 NORMAL. At threshold 0.5: TP=3, FN=1 (0.2), FP=2 (0.6, 0.55), TN=4.
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
PROBS = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.55, 0.1, 0.2, 0.3, 0.4])

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy but informative scores for n images."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    probs = np.clip(0.35 * labels + 0.65 * rng.random(n), 0.0, 1.0)
    return labels, probs


def test_confusion_layout_and_threshold_rule() -> None:
    np.testing.assert_array_equal(confusion(LABELS, PROBS), [[4, 2], [1, 3]])
    # prob >= threshold counts as PNEUMONIA, so 0.5 exactly is positive.
    np.testing.assert_array_equal(confusion([0, 1], [0.5, 0.5]), [[0, 1], [0, 1]])
    # A class absent from the data still gets its row and column.
    np.testing.assert_array_equal(confusion([1, 1], [0.9, 0.1]), [[0, 0], [1, 1]])


def test_binary_metrics_hand_computed() -> None:
    m = binary_metrics(LABELS, PROBS)
    assert set(m) == set(METRIC_NAMES)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    # 24 positive-negative pairs: 0.9, 0.8, 0.7 beat all 6 negatives; 0.2 beats 0.1 and ties 0.2.
    assert m["roc_auc"] == pytest.approx((6 + 6 + 6 + 1 + 0.5) / 24)
    true_class_probs = [0.9, 0.8, 0.7, 0.2, 0.4, 0.45, 0.9, 0.8, 0.7, 0.6]
    assert m["loss"] == pytest.approx(-sum(math.log(q) for q in true_class_probs) / 10)


def test_threshold_changes_operating_point() -> None:
    m = binary_metrics(LABELS, PROBS, threshold=0.65)  # now TP=3, FP=0, TN=6, FN=1
    assert m["specificity"] == pytest.approx(1.0)
    assert m["precision"] == pytest.approx(1.0)
    assert m["accuracy"] == pytest.approx(9 / 10)


def test_perfect_confident_classifier() -> None:
    labels = np.array([0, 1] * 10)
    m = binary_metrics(labels, np.where(labels == 1, 0.999, 0.001))
    assert m["roc_auc"] == pytest.approx(1.0)
    assert m["accuracy"] == pytest.approx(1.0)
    assert m["ece"] == pytest.approx(0.001)
    assert m["loss"] == pytest.approx(-math.log(0.999))
    assert binary_metrics(labels, labels.astype(float))["ece"] == pytest.approx(0.0)


def test_ece_hand_computed() -> None:
    # 5 bins with edges 0, .2, .4, .6, .8, 1; the confidence is that of the predicted class.
    labels = np.array([1, 1, 1, 0, 1, 1, 0, 0])
    probs = np.array([0.9, 0.9, 0.9, 0.9, 0.7, 0.3, 0.55, 0.45])
    # (0.8, 1]: 4 images, conf 0.9, 3 right -> gap 0.15; (0.6, 0.8]: 2 images, conf 0.7, 1 right -> 0.2;
    # (0.4, 0.6]: 2 images, conf 0.55, 1 right -> 0.05.
    expected = 4 / 8 * 0.15 + 2 / 8 * 0.2 + 2 / 8 * 0.05
    assert expected_calibration_error(labels, probs, n_bins=5) == pytest.approx(expected)
    bins = reliability_bins(labels, probs, n_bins=5)
    np.testing.assert_array_equal(bins.counts, [0, 0, 2, 2, 4])
    np.testing.assert_allclose(bins.accuracy[2:], [0.5, 0.5, 0.75])
    np.testing.assert_allclose(bins.mean_confidence[2:], [0.55, 0.7, 0.9])
    assert np.isnan(bins.accuracy[:2]).all()


@pytest.mark.parametrize(
    ("labels", "probs", "message"),
    [
        ([], [], "empty"),
        ([0, 1, 1], [0.2, 0.8], "differ in length"),
        ([0, 2], [0.2, 0.8], "labels must be 0"),
        ([0, 1], [0.2, 1.5], r"\[0, 1\]"),
        ([0, 1], [-0.1, 0.5], r"\[0, 1\]"),
        ([0, 1], [0.2, float("nan")], "NaN"),
        ([[0, 1]], [[0.2, 0.8]], "1-D"),
    ],
)
def test_invalid_inputs_raise(labels: list, probs: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        binary_metrics(np.array(labels), np.array(probs))
    with pytest.raises(ValueError, match=message):
        bootstrap_metrics(np.array(labels), np.array(probs), n_resamples=5)


def test_invalid_settings_raise() -> None:
    with pytest.raises(ValueError, match="threshold"):
        binary_metrics(LABELS, PROBS, threshold=1.5)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(LABELS, PROBS, n_bins=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_metrics(LABELS, PROBS, confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_metrics(LABELS, PROBS, n_resamples=0)


def test_single_class_gives_nan_with_warning() -> None:
    with pytest.warns(UndefinedMetricWarning, match="no NORMAL"):
        m = binary_metrics(np.ones(4, dtype=int), np.array([0.9, 0.8, 0.3, 0.6]))
    assert np.isnan(m["roc_auc"]) and np.isnan(m["specificity"])
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(3 / 4)

    with pytest.warns(UndefinedMetricWarning) as record:
        m = binary_metrics(np.zeros(3, dtype=int), np.array([0.1, 0.2, 0.3]))
    messages = " ".join(str(w.message) for w in record)
    assert "no PNEUMONIA" in messages and "no image predicted PNEUMONIA" in messages
    for name in ("roc_auc", "sensitivity", "precision", "f1"):
        assert np.isnan(m[name]), name
    assert m["specificity"] == pytest.approx(1.0)
    assert np.isfinite(m["loss"]) and np.isfinite(m["ece"])


def test_weighted_resample_matches_binary_metrics() -> None:
    labels, probs = _synthetic(60, seed=3)
    probs[:2] = [0.0, 1.0]  # exercise the log-loss clipping
    idx = np.random.default_rng(7).integers(0, labels.size, labels.size)
    weights = np.bincount(idx, minlength=labels.size)[None, :].astype(float)
    vectorised = _metrics_from_weights(labels, probs, weights, 0.4)
    direct = binary_metrics(labels[idx], probs[idx], threshold=0.4)
    for name in METRIC_NAMES:
        assert vectorised[name][0] == pytest.approx(direct[name], rel=1e-9), name


def test_resampled_auc_matches_sklearn_with_ties_and_missing_classes() -> None:
    labels, probs = _synthetic(80, seed=5)
    probs = np.round(probs, 1)  # many tied scores, within and across classes
    weights = np.random.default_rng(11).integers(0, 3, size=(40, labels.size)).astype(float)
    weights[0] = labels  # a resample with no NORMAL image
    vectorised = _metrics_from_weights(labels, probs, weights, 0.5)["roc_auc"]
    assert np.isnan(vectorised[0])
    for row in range(1, weights.shape[0]):
        drawn = weights[row] > 0
        expected = roc_auc_score(labels[drawn], probs[drawn], sample_weight=weights[row, drawn])
        assert vectorised[row] == pytest.approx(expected, rel=1e-12), row


def test_bootstrap_interval_contains_estimate_and_narrows() -> None:
    labels, probs = _synthetic(100, seed=0)
    small = bootstrap_metrics(labels, probs, n_resamples=300)
    large = bootstrap_metrics(np.tile(labels, 16), np.tile(probs, 16), n_resamples=300)
    assert set(small) == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        for est in (small[name], large[name]):
            assert isinstance(est, MetricEstimate)
            assert est.low <= est.value <= est.high, name
        assert large[name].value == pytest.approx(small[name].value)
        assert large[name].high - large[name].low < 0.5 * (small[name].high - small[name].low), name


def test_bootstrap_is_deterministic_from_seed() -> None:
    labels, probs = _synthetic(80, seed=1)
    first = bootstrap_metrics(labels, probs, n_resamples=100, seed=5)
    assert first == bootstrap_metrics(labels, probs, n_resamples=100, seed=5)
    assert first != bootstrap_metrics(labels, probs, n_resamples=100, seed=6)


def test_bootstrap_skips_resamples_missing_a_class() -> None:
    labels = np.array([1] + [0] * 19)  # most resamples of 20 images lose the one positive
    probs = np.linspace(0.05, 0.95, 20)[::-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = bootstrap_metrics(labels, probs, n_resamples=200)
    assert np.isfinite([est["roc_auc"].low, est["roc_auc"].high]).all()
    assert np.isfinite([est["sensitivity"].low, est["sensitivity"].high]).all()


def test_bootstrap_single_class_gives_nan_bounds() -> None:
    with pytest.warns(UndefinedMetricWarning):
        est = bootstrap_metrics(np.ones(5, dtype=int), np.full(5, 0.8), n_resamples=20)
    assert np.isnan([est["roc_auc"].value, est["roc_auc"].low, est["roc_auc"].high]).all()
    assert est["accuracy"] == MetricEstimate(1.0, 1.0, 1.0)


def _width(estimate: MetricEstimate) -> float:
    return estimate.high - estimate.low


def test_patient_bootstrap_is_wider_when_each_patient_has_identical_films() -> None:
    # 40 patients of 10 identical films: there are 40 independent observations, not 400.
    labels, probs = _synthetic(40, seed=4)
    patients = np.repeat(np.arange(40), 10)
    labels, probs = labels[patients], probs[patients]
    by_image = bootstrap_metrics(labels, probs, n_resamples=200)
    by_patient = bootstrap_metrics(labels, probs, n_resamples=200, groups=patients.astype(str))
    for name in ("accuracy", "sensitivity", "specificity", "roc_auc", "loss"):
        assert by_patient[name].value == by_image[name].value, name
        assert by_patient[name].low <= by_patient[name].value <= by_patient[name].high, name
        # sqrt(10) ~ 3.2 times wider in theory.
        assert _width(by_patient[name]) > 2 * _width(by_image[name]), name


def test_patient_bootstrap_with_one_image_per_patient_is_the_image_bootstrap() -> None:
    labels, probs = _synthetic(150, seed=5)
    by_image = bootstrap_metrics(labels, probs, n_resamples=100, seed=2)
    # Patients numbered in image order draw exactly the resamples the image bootstrap draws.
    assert bootstrap_metrics(labels, probs, n_resamples=100, seed=2, groups=np.arange(150)) == by_image
    # Named in another order, they draw other resamples of the same distribution.
    names = np.array([f"patient-{i}" for i in np.random.default_rng(0).permutation(150)])
    by_name = bootstrap_metrics(labels, probs, n_resamples=500, seed=3, groups=names)
    reference = bootstrap_metrics(labels, probs, n_resamples=500, seed=3)
    for name in METRIC_NAMES:
        assert _width(by_name[name]) == pytest.approx(_width(reference[name]), rel=0.2), name


def test_bootstrap_groups_must_give_one_patient_per_image() -> None:
    with pytest.raises(ValueError, match="one patient id per image"):
        bootstrap_metrics(LABELS, PROBS, n_resamples=5, groups=np.arange(9))
    with pytest.raises(ValueError, match="one patient id per image"):
        bootstrap_metrics(LABELS, PROBS, n_resamples=5, groups=np.arange(10).reshape(2, 5))


def test_summarize_runs() -> None:
    assert summarize_runs([1.0, 2.0, 3.0]) == (pytest.approx(2.0), pytest.approx(1.0))
    mean, std = summarize_runs([0.5])
    assert mean == 0.5 and math.isnan(std)  # one run says nothing about the spread
    with pytest.raises(ValueError, match="non-empty"):
        summarize_runs([])


def test_comparison_table_leaves_the_std_of_a_single_run_blank(tmp_path: Path) -> None:
    def run(arm: str, seed: int, value: float) -> dict:
        return {"arm": arm, "seed": seed, "set": "test", "threshold": "0.5", **dict.fromkeys(COMPARED_METRICS, value)}

    result = Comparison(runs=[run("teacher", 0, 0.95), run("student", 0, 0.9), run("student", 1, 0.8)])
    result.summary = summarize(result.runs, ["teacher", "student"])
    assert result.summary[1]["accuracy_std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_results(result, tmp_path, tmp_path, "compare")

    teacher_md = next(line for line in (tmp_path / "compare.md").read_text().splitlines() if "| teacher |" in line)
    assert "nan" not in teacher_md.lower() and "0.0000" not in teacher_md
    assert teacher_md.count("|  |") == len(COMPARED_METRICS)  # one blank std cell per metric
    with open(tmp_path / "compare.csv", newline="") as stream:
        teacher_csv, student_csv = list(csv.DictReader(stream))
    assert teacher_csv["accuracy_std"] == "" and teacher_csv["accuracy_mean"] == "0.95"
    assert float(student_csv["accuracy_std"]) == pytest.approx(np.std([0.9, 0.8], ddof=1))


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plots_write_valid_pngs(tmp_path: Path) -> None:
    labels, probs = _synthetic(50, seed=2)
    out = tmp_path / "nested" / "figures"
    written = [
        plot_roc(labels, probs, out / "roc.png"),
        plot_confusion(confusion(labels, probs), out / "confusion.png"),
        plot_confusion(np.array([[5, 1], [0, 0]]), out / "confusion_empty_row.png"),
        plot_reliability(labels, probs, out / "reliability.png", n_bins=10),
        plot_metric_curves(
            {"accuracy": [0.8, 0.85, 0.83], "ece": [0.05, 0.03, 0.04]},
            [1.0, 4.0, 8.0],
            out / "sweep.png",
            xlabel="temperature",
            title="Temperature sweep",
        ),
    ]
    for path in written:
        assert path.is_file() and path.stat().st_size > 0
        width, height = _png_size(path)
        assert width > 0 and height > 0


def test_plot_input_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both"):
        plot_roc(np.ones(3, dtype=int), np.array([0.2, 0.5, 0.9]), tmp_path / "roc.png")
    with pytest.raises(ValueError, match="2x2"):
        plot_confusion(np.ones((3, 3)), tmp_path / "cm.png")
    with pytest.raises(ValueError, match="has 2 values"):
        plot_metric_curves({"f1": [0.1, 0.2]}, [1.0, 2.0, 3.0], tmp_path / "m.png", "x", "t")

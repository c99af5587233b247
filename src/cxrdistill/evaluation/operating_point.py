"""The operating point, in one place: threshold policies, temperature fitting, what is stored, and which
threshold a deployed model decides at.

A model trained on one cohort is rarely calibrated for another, and 0.5 is rarely the right cut-off:
on a later cohort specificity can collapse while AUC barely moves. Two numbers, both stored in the
checkpoint's metadata and applied wherever the model is used (evaluation, prediction, ONNX export):

* the **operating point** (``metadata["operating_point"]["threshold"]``): PNEUMONIA when the probability
  is at least this; chosen by a policy on data the reported results never see — the validation split
  after training, or a site's own labelled sample with ``cxrdistill calibrate``;
* the **temperature** (``metadata["calibration"]["temperature"]``): probabilities are
  ``softmax(logits / T)`` (Guo et al. 2017); one scalar fitted by minimising the negative log-likelihood.
  It changes calibration (loss, ECE), never the ranking (AUC).

The commands that run a model over data to fit them are in :mod:`cxrdistill.evaluation.calibrate`; the
served model applies what is stored (:func:`cxrdistill.runtime.served.load_served_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.metrics import roc_curve

from cxrdistill.config import EvaluationConfig
from cxrdistill.errors import InvalidArgumentError
from cxrdistill.evaluation.metrics import binary_metrics, check_binary_inputs
from cxrdistill.evaluation.predict import Predictions
from cxrdistill.registry import Registry
from cxrdistill.runtime import distributed
from cxrdistill.runtime.checkpoint import update_checkpoint_metadata

THRESHOLD_POLICIES: tuple[str, ...] = ("youden", "min_sensitivity", "fixed")
DEFAULT_THRESHOLD = 0.5
"""The threshold used when a model stores none, and always reported beside the stored one."""
TEMPERATURE_BOUNDS: tuple[float, float] = (0.01, 100.0)
"""Fitted temperatures are kept in this range; perfectly separated data would otherwise drive T to 0."""


def choose_threshold(
    labels: np.ndarray, prob_positive: np.ndarray, policy: str, min_sensitivity: float = 0.98,
    fixed_threshold: float = DEFAULT_THRESHOLD,
) -> float:
    """The operating threshold ``policy`` picks on this labelled set (use the rule ``prob >= threshold``).

    ``youden``: the ROC point with the largest sensitivity + specificity - 1 (the highest threshold among
    ties). ``min_sensitivity``: the highest threshold whose sensitivity is at least ``min_sensitivity``,
    i.e. the best specificity that still misses at most ``1 - min_sensitivity`` of the pneumonias.
    ``fixed``: ``fixed_threshold``. Candidates are scikit-learn's ``roc_curve`` thresholds, so the chosen
    threshold reproduces the ROC point it was chosen for.
    """
    if policy not in THRESHOLD_POLICIES:
        raise InvalidArgumentError(f"unknown threshold policy {policy!r}; choose one of {list(THRESHOLD_POLICIES)}")
    if policy == "fixed":
        if not 0.0 <= fixed_threshold <= 1.0:
            raise InvalidArgumentError(f"fixed_threshold must be in [0, 1], got {fixed_threshold}")
        return float(fixed_threshold)
    y, p = check_binary_inputs(labels, prob_positive)
    if len(np.unique(y)) < 2:
        raise InvalidArgumentError(
            f"choosing a threshold by {policy!r} needs NORMAL and PNEUMONIA images; this set has one")
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    if policy == "youden":
        index = int(np.argmax(tpr - fpr))
    else:
        if not 0.0 < min_sensitivity <= 1.0:
            raise InvalidArgumentError(f"min_sensitivity must be in (0, 1], got {min_sensitivity}")
        index = int(np.argmax(tpr >= min_sensitivity))  # tpr rises as the threshold falls: the first is the highest
    return float(min(thresholds[index], 1.0))  # roc_curve's first threshold is +inf: "nothing positive"


def operating_point_record(
    labels: np.ndarray, prob_positive: np.ndarray, policy: str, chosen_on: str, min_sensitivity: float = 0.98,
    fixed_threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """The ``metadata["operating_point"]`` entry: the threshold, how and where it was chosen, its metrics there."""
    threshold = choose_threshold(labels, prob_positive, policy, min_sensitivity, fixed_threshold)
    record: dict[str, Any] = {"threshold": threshold, "policy": policy, "chosen_on": chosen_on,
                              "count": len(labels)}
    if policy == "min_sensitivity":
        record["min_sensitivity"] = min_sensitivity
    record["metrics_at_threshold"] = binary_metrics(labels, prob_positive, threshold)
    return record


def store_operating_point(
    checkpoint: str | Path, predictions: Predictions, settings: EvaluationConfig, chosen_on: str, data: str,
    extra_metadata: dict[str, Any] | None = None, out: str | Path | None = None,
) -> dict[str, Any]:
    """Choose the threshold on ``predictions`` with ``settings``; write it into the checkpoint's metadata.

    ``chosen_on`` names the role of the data (``"val"``) and ``data`` describes it. The checkpoint is
    rewritten atomically (to ``out`` when given) with ``extra_metadata`` merged in as well.
    """
    record = operating_point_record(predictions.labels, predictions.prob_positive, settings.threshold_policy,
                                    chosen_on, settings.min_sensitivity, settings.fixed_threshold)
    record["data"] = data
    if distributed.is_main_process():  # under torchrun every rank holds the record, rank 0 writes it
        update_checkpoint_metadata(checkpoint, {"operating_point": record, **(extra_metadata or {})}, out)
    return record


def nll_at_temperature(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the labels under ``softmax(logits / temperature)``."""
    log_probs = log_softmax(np.asarray(logits, dtype=float) / temperature, axis=1)
    return float(-log_probs[np.arange(len(labels)), np.asarray(labels)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of ``softmax(logits / T)`` on these labelled logits.

    The NLL is convex in ``1 / T`` (a log-sum-exp of a linear function minus a linear one), so a bounded
    one-dimensional search over ``1 / T`` finds the global minimum.
    """
    logits = np.asarray(logits, dtype=float)
    labels = np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need (N, classes) logits and N labels, got shapes {logits.shape} and {labels.shape}")
    low, high = TEMPERATURE_BOUNDS
    result = minimize_scalar(lambda inverse: nll_at_temperature(logits, labels, 1.0 / inverse),
                             bounds=(1.0 / high, 1.0 / low), method="bounded", options={"xatol": 1e-6})
    return float(1.0 / result.x)


@dataclass(frozen=True)
class LocalCalibration:
    """Temperature and threshold fitted on a site's labelled logits (``cxrdistill calibrate`` and its studies)."""

    temperature: float
    threshold: float


def fit_local_calibration(logits: np.ndarray, labels: np.ndarray, settings: EvaluationConfig) -> LocalCalibration:
    """Fit the temperature on raw logits, then pick the threshold with ``settings`` on the calibrated probabilities."""
    temperature = fit_temperature(logits, labels)
    calibrated = Predictions(np.asarray(labels), np.asarray(logits, dtype=float) / temperature, [])
    threshold = choose_threshold(calibrated.labels, calibrated.prob_positive, settings.threshold_policy,
                                 settings.min_sensitivity, settings.fixed_threshold)
    return LocalCalibration(temperature, threshold)


def stored_threshold(metadata: dict[str, Any]) -> float | None:
    """The checkpoint's (or ONNX file's) operating threshold, ``None`` when it stores none."""
    point = metadata.get("operating_point")
    return float(point["threshold"]) if point else None


# -- which threshold a deployed model decides at -------------------------------------------------
INTERNAL_SPLITS: frozenset[str] = frozenset({"val", "test"})
"""Operating points chosen on these (patient-wise parts of the training folder) do not transfer to new
patients: on a later cohort Youden's threshold on val cost 2-3 points of accuracy and up to 15 of
specificity against 0.5 (docs/site-adaptation.md)."""


@dataclass(frozen=True)
class ThresholdInUse:
    """The threshold a prediction is decided at, and why: shown by ``predict``, ``serve`` and the model card."""

    threshold: float
    rule: str
    """Policy and where it was fitted, e.g. ``"0.5 (default)"`` or ``"youden on local calibration data"``."""
    reason: str


THRESHOLD_CHOICES = Registry[Callable[[dict[str, Any]], ThresholdInUse]]("threshold choice")
"""How ``predict``/``serve`` pick the threshold from a model's metadata (``--operating-point``)."""


def _stored_point(metadata: dict[str, Any]) -> ThresholdInUse | None:
    point = metadata.get("operating_point")
    if not point:
        return None
    return ThresholdInUse(float(point["threshold"]), f"{point['policy']} on {point['chosen_on']}",
                          f"the model's stored operating point ({point.get('count', '?')} images)")


@THRESHOLD_CHOICES.register("default")
def default_threshold(metadata: dict[str, Any]) -> ThresholdInUse:
    """A threshold fitted at the site (calibrate, adapt); otherwise 0.5, which transferred to new patients
    better than any threshold chosen on the internal validation split."""
    stored = _stored_point(metadata)
    point = metadata.get("operating_point") or {}
    if stored is not None and point.get("chosen_on") not in INTERNAL_SPLITS:
        return ThresholdInUse(stored.threshold, stored.rule, "fitted at this site: " + stored.reason)
    why = "no operating point stored" if stored is None else (
        f"the stored {stored.rule} ({stored.threshold:.4g}) was chosen on the internal {point['chosen_on']} split, "
        f"which did not transfer to new patients; --operating-point stored uses it")
    return ThresholdInUse(DEFAULT_THRESHOLD, f"{DEFAULT_THRESHOLD:g} (default)", why)


@THRESHOLD_CHOICES.register("stored")
def stored_operating_point(metadata: dict[str, Any]) -> ThresholdInUse:
    """The stored operating point, wherever it was chosen."""
    stored = _stored_point(metadata)
    if stored is None:
        raise InvalidArgumentError("this model stores no operating point; use --operating-point default or "
                                   "--threshold")
    return stored


@THRESHOLD_CHOICES.register("0.5")
def conventional_threshold(metadata: dict[str, Any]) -> ThresholdInUse:
    """0.5 whatever the model stores."""
    return ThresholdInUse(DEFAULT_THRESHOLD, f"{DEFAULT_THRESHOLD:g}", "asked for")


def threshold_in_use(metadata: dict[str, Any], choice: str = "default",
                     threshold: float | None = None) -> ThresholdInUse:
    """The threshold to decide at: ``threshold`` when given, else the one ``choice`` picks from ``metadata``."""
    if threshold is not None:
        return ThresholdInUse(float(threshold), f"{threshold:g} (given)", "given on the command line")
    return THRESHOLD_CHOICES.get(choice)(metadata)

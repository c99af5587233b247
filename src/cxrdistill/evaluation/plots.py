"""PNG figures for evaluation reports: ROC curve, confusion matrix, reliability diagram, metric sweeps.

Every function draws on its own ``matplotlib.figure.Figure`` attached to an Agg canvas instead of going
through ``pyplot``: that needs no display, never switches the process-wide backend under other code, and
leaves no figure registered in pyplot's global state, so nothing stays open or leaks across many calls.
Each function creates the parent folder of ``path``, writes a PNG and returns the path it wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from cxrdistill.data.layout import CLASS_NAMES
from cxrdistill.evaluation.metrics import (
    ECE_BINS,
    check_binary_inputs,
    expected_calibration_error,
    reliability_bins,
)
from cxrdistill.figures import new_figure, save_figure


def plot_roc(
    labels: np.ndarray,
    prob_positive: np.ndarray,
    path: str | os.PathLike[str],
    title: str = "ROC curve",
) -> Path:
    """ROC curve of PNEUMONIA-vs-NORMAL scores with its AUC and the chance diagonal.

    Raises ``ValueError`` unless both classes are present, since a ROC curve needs both.
    """
    y, p = check_binary_inputs(labels, prob_positive)
    if np.unique(y).size != 2:
        raise ValueError("plot_roc needs both NORMAL (0) and PNEUMONIA (1) labels present")
    fpr, tpr, _ = roc_curve(y, p, pos_label=1)
    auc = roc_auc_score(y, p)
    fig = new_figure((5.0, 5.0))
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, lw=2, label=f"model (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="chance")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="False positive rate (1 - specificity)",
        ylabel="True positive rate (sensitivity)",
        title=title,
    )
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_confusion(
    matrix: np.ndarray,
    path: str | os.PathLike[str],
    class_names: tuple[str, ...] = CLASS_NAMES,
    title: str = "Confusion matrix",
) -> Path:
    """Confusion matrix (rows true, columns predicted) showing counts and row percentages per cell.

    Cells are shaded by row percentage so that per-class recall reads at a glance even when the classes
    are imbalanced; a row with no images shows "n/a" instead of a percentage.
    """
    counts = np.asarray(matrix)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"matrix must be {k}x{k} to match class_names, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("matrix contains negative counts")
    row_totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        row_pct = np.where(row_totals > 0, 100.0 * counts / row_totals, np.nan)
    fig = new_figure((5.0, 4.5))
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(row_pct), cmap="Blues", vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, label="% of true class")
    for i in range(k):
        for j in range(k):
            pct = "n/a" if np.isnan(row_pct[i, j]) else f"{row_pct[i, j]:.1f}%"
            colour = "white" if np.nan_to_num(row_pct[i, j]) > 50 else "black"
            ax.text(j, i, f"{counts[i, j]:g}\n{pct}", ha="center", va="center", color=colour)
    ax.set(
        xticks=range(k),
        yticks=range(k),
        xticklabels=class_names,
        yticklabels=class_names,
        xlabel="Predicted",
        ylabel="True",
        title=title,
    )
    return save_figure(fig, path)


def plot_reliability(
    labels: np.ndarray,
    prob_positive: np.ndarray,
    path: str | os.PathLike[str],
    n_bins: int = ECE_BINS,
    title: str = "Reliability diagram",
) -> Path:
    """Reliability diagram of top-label confidence, with the ECE in the title and bin counts beneath.

    Uses the same bins and definition as :func:`cxrdistill.evaluation.metrics.expected_calibration_error`,
    so the picture and the reported ECE agree.
    """
    bins = reliability_bins(labels, prob_positive, n_bins)
    ece = expected_calibration_error(labels, prob_positive, n_bins)
    centres = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = bins.edges[1] - bins.edges[0]
    filled = bins.counts > 0
    fig = new_figure((5.0, 6.0))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(
        centres[filled], bins.accuracy[filled], width=width, edgecolor="black", alpha=0.8, label="accuracy"
    )
    top.scatter(
        bins.mean_confidence[filled],
        bins.accuracy[filled],
        color="red",
        zorder=3,
        s=15,
        label="(mean conf., accuracy)",
    )
    top.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="Accuracy", title=f"{title} (ECE = {ece:.3f})")
    top.legend(loc="upper left")
    bottom.bar(centres, bins.counts, width=width, edgecolor="black", color="grey")
    bottom.set(xlabel="Confidence of predicted class", ylabel="Images")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_metric_curves(
    table: dict[str, list[float]],
    x: list[float],
    path: str | os.PathLike[str],
    xlabel: str,
    title: str,
) -> Path:
    """One line per metric against a swept setting (e.g. distillation temperature)."""
    if not table:
        raise ValueError("table has no metrics to plot")
    for name, values in table.items():
        if len(values) != len(x):
            raise ValueError(f"metric {name!r} has {len(values)} values but x has {len(x)}")
    fig = new_figure((6.0, 4.0))
    ax = fig.add_subplot()
    for name, values in table.items():
        ax.plot(x, values, marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel="Value", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_comparison(
    summary: list[dict],
    metrics: tuple[str, ...],
    path: str | os.PathLike[str],
    title: str = "Test metrics by arm (mean ± std over seeds)",
) -> Path:
    """Grouped bars: one group per metric, one bar per arm, error bars of one standard deviation.

    ``summary`` rows hold ``arm`` plus ``{metric}_mean`` and ``{metric}_std`` for each metric; a NaN std
    (an arm with one seed) draws no error bar.
    """
    fig = new_figure((7.5, 4.5))
    ax = fig.add_subplot()
    width = 0.8 / max(len(summary), 1)
    positions = np.arange(len(metrics))
    for i, row in enumerate(summary):
        means = [row[f"{m}_mean"] for m in metrics]
        stds = [row[f"{m}_std"] for m in metrics]
        ax.bar(positions + i * width, means, width, yerr=stds, capsize=3, label=f"{row['arm']} (n={row['seeds']})")
    ax.set_xticks(positions + width * (len(summary) - 1) / 2, metrics)
    lows = [row[f"{m}_mean"] - np.nan_to_num(row[f"{m}_std"]) for row in summary for m in metrics]
    ax.set_ylim(max(0.0, min(lows, default=0.0) - 0.05), 1.0)
    ax.set(ylabel="value", title=title)
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)

"""The reproduction report's figures: training curves, ROC of the three models, metric against T, cost.

Drawn like :mod:`cxrdistill.evaluation.plots` (a Figure on an Agg canvas, never pyplot), whose helpers
they reuse; each function writes one PNG and returns its path.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from cxrdistill.figures import new_figure, save_figure


def plot_training_curves(histories: dict[str, list[dict]], path: str | os.PathLike[str]) -> Path:
    """Per run: training and validation loss, and validation accuracy, by epoch."""
    fig = new_figure((10.0, 4.0))
    loss_ax, accuracy_ax = fig.subplots(1, 2)
    for index, (name, rows) in enumerate(histories.items()):
        colour = f"C{index}"
        epochs = [row["epoch"] for row in rows]
        loss_ax.plot(epochs, [row.get("train_loss", math.nan) for row in rows], color=colour, ls="--",
                     label=f"{name} train")
        loss_ax.plot(epochs, [row.get("val_loss", math.nan) for row in rows], color=colour, label=f"{name} val")
        accuracy_ax.plot(epochs, [row.get("val_accuracy", math.nan) for row in rows], color=colour, marker="o",
                         ms=3, label=name)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss (dashed: training)")
    accuracy_ax.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy (threshold 0.5)", ylim=(0, 1.02))
    for ax in (loss_ax, accuracy_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_roc_curves(curves: dict[str, tuple[list[int], list[float]]], path: str | os.PathLike[str],
                    title: str) -> Path:
    """One ROC curve per model (labels, PNEUMONIA probabilities) on the same images."""
    fig = new_figure((5.5, 5.5))
    ax = fig.add_subplot()
    for name, (labels, prob) in curves.items():
        y, p = np.asarray(labels), np.asarray(prob)
        if np.unique(y).size < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p, pos_label=1)
        ax.plot(fpr, tpr, lw=2, label=f"{name} (AUC = {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate (1 - specificity)",
           ylabel="True positive rate (sensitivity)", title=title)
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize="small")
    return save_figure(fig, path)


def plot_against_temperature(ours: dict[str, list[tuple[float, float, float, float]]],
                             paper: dict[str, list[tuple[float, float]]], path: str | os.PathLike[str]) -> Path:
    """Each metric against T: ours (value with its 95 % interval) solid, the paper's dashed."""
    fig = new_figure((6.5, 4.2))
    ax = fig.add_subplot()
    for index, (metric, points) in enumerate(ours.items()):
        colour = f"C{index}"
        t, value, low, high = (np.asarray(column, dtype=float) for column in zip(*points, strict=True))
        errors = np.vstack([value - low, high - value])
        ax.errorbar(t, value, yerr=np.nan_to_num(errors), color=colour, marker="o", capsize=3, label=f"{metric} (ours)")
        if metric in paper:
            pt, pv = zip(*paper[metric], strict=True)
            ax.plot(pt, pv, color=colour, ls="--", marker="x", label=f"{metric} (paper)")
    ax.set(xlabel="temperature T", ylabel="value", title="Distilled student against temperature (test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    return save_figure(fig, path)


def plot_accuracy_against_cost(ours: dict[str, tuple[float, float]], paper: dict[str, tuple[float, float]],
                               path: str | os.PathLike[str]) -> Path:
    """Test accuracy against GFLOPs per image, per architecture: ours filled, the paper's hollow."""
    fig = new_figure((6.5, 4.2))
    ax = fig.add_subplot()
    for index, name in enumerate(dict.fromkeys([*ours, *paper])):
        colour = f"C{index}"
        if name in ours:
            ax.scatter(*ours[name], color=colour, s=50, label=f"{name} (ours)")
        if name in paper:
            ax.scatter(*paper[name], facecolors="none", edgecolors=colour, s=50, label=f"{name} (paper)")
    ax.set_xscale("log")
    ax.set(xlabel="GFLOPs per image (log scale; at the size trained)", ylabel="test accuracy",
           title="Accuracy against cost per architecture")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    return save_figure(fig, path)

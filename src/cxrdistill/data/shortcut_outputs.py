"""The files a shortcut audit writes: its JSON, a Markdown table, the class mean images and the AUC bars.

The mean images show *where* the classes differ on average (a bright border or corner in one class only
shows up as a patch in the difference image); the bar chart shows *which* cue group predicts the label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrdistill.data.layout import CLASS_NAMES
from cxrdistill.data.shortcuts import CLASSIFIERS, FeatureTable, ShortcutReport
from cxrdistill.figures import new_figure, save_figure
from cxrdistill.files import atomic_write_json, atomic_write_text

SHORTCUT_AUDIT_FILE = "shortcut_audit.json"
"""Name of the audit's JSON; the model card reads it from a checkpoint's run folder when it is there."""
SHORTCUT_TABLE_FILE = "shortcut_audit.md"
MEAN_IMAGES_FILE = "mean_images.png"
GROUP_AUC_FILE = "group_auc.png"


def auc_columns(report: ShortcutReport) -> dict[str, dict[str, dict[str, float]]]:
    """Every scored set's ``auc[group][classifier]``: folders (cross-validated) first, then external sets."""
    columns = {f"{name or '(all)'} (CV)": entry["auc"] for name, entry in report.folders.items() if "auc" in entry}
    fitted = report.fitted_on or "(all)"
    return columns | {f"{name} (fit on {fitted})": entry["auc"] for name, entry in report.external.items()
                      if "auc" in entry}


def shortcut_markdown(report: ShortcutReport) -> str:
    """Per feature group and set, the ROC AUC of each classifier (``logistic / boosting``)."""
    columns = auc_columns(report)
    if not columns:
        return "No folder was large enough to score (each class needs at least 2 patients).\n"
    groups = list(next(iter(columns.values())))
    lines = [f"ROC AUC of trivial image features for the label ({' / '.join(CLASSIFIERS.names())}); "
             f"warning level {report.warning_level:g}, chance 0.5.", "",
             "| features | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for group in groups:
        cells = [" / ".join(f"{aucs[group][name]:.3f}" for name in CLASSIFIERS.names()) for aucs in columns.values()]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    if report.single_features:
        lines += ["", f"Strongest single features in {report.fitted_on or '(all)'} (ROC AUC alone):", "",
                  "| feature | group | AUC | higher in |", "|---|---|---|---|"]
        lines += [f"| {f['feature']} | {f['group']} | {f['auc']:.3f} | {f['higher_in']} |"
                  for f in report.single_features]
    lines += ["", *(f"- WARNING {line}" for line in report.warnings)] if report.warnings else []
    return "\n".join(lines) + "\n"


def plot_mean_images(table: FeatureTable, path: Path, title: str) -> Path:
    """Mean grey image of each class and their difference (PNEUMONIA minus NORMAL, symmetric colour scale)."""
    means = table.mean_images()
    difference = means[1] - means[0]
    limit = float(np.abs(difference).max()) or 1.0
    fig = new_figure((12.0, 4.2))
    axes = fig.subplots(1, 3)
    for ax, image, name in zip(axes[:2], means, CLASS_NAMES, strict=True):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"mean {name} ({sum(label == CLASS_NAMES.index(name) for label in table.labels)})")
    shown = axes[2].imshow(difference, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[2].set_title(f"{CLASS_NAMES[1]} - {CLASS_NAMES[0]} (grey levels)")
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_group_aucs(report: ShortcutReport, path: Path) -> Path:
    """Bars of each group's ROC AUC per scored set (best classifier), with chance and the warning level."""
    columns = auc_columns(report)
    groups = list(next(iter(columns.values()))) if columns else []
    fig = new_figure((max(6.0, 1.1 * len(groups) * max(1, len(columns)) ** 0.5 + 2), 4.2))
    ax = fig.subplots()
    width = 0.8 / max(1, len(columns))
    positions = np.arange(len(groups))
    for number, (name, aucs) in enumerate(columns.items()):
        ax.bar(positions + number * width, [max(aucs[g].values()) for g in groups], width, label=name)
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.axhline(report.warning_level, color="red", linestyle="--", label=f"warning {report.warning_level:g}")
    ax.set_xticks(positions + width * (len(columns) - 1) / 2, groups)
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("ROC AUC (best of " + ", ".join(CLASSIFIERS.names()) + ")")
    ax.set_title("Which trivial cue predicts the label")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def write_shortcut_outputs(report: ShortcutReport, table: FeatureTable, out_dir: Path, root: str) -> list[Path]:
    """JSON, Markdown and the two figures of an audit of ``root`` (``table``: the folder it fitted on)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_json(out_dir / SHORTCUT_AUDIT_FILE, {"root": root, **report.as_dict()}),
               atomic_write_text(out_dir / SHORTCUT_TABLE_FILE, shortcut_markdown(report))]
    if table.labels:
        written.append(plot_mean_images(table, out_dir / MEAN_IMAGES_FILE,
                                        f"{root} {report.fitted_on}".strip()))
    if auc_columns(report):
        written.append(plot_group_aucs(report, out_dir / GROUP_AUC_FILE))
    return written

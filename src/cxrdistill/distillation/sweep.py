"""``cxrdistill sweep-temperature``: one distilled student per temperature, as in the paper's Table II.

All students share one teacher and, in cached mode, one file of teacher logits (computed by the first
run, reused by the rest). Each student is scored on the validation split (where a temperature should
be chosen) and on the held-out test split (what the paper's table reports).
"""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

from cxrdistill.config import ExperimentConfig
from cxrdistill.evaluation.evaluate import point_metrics
from cxrdistill.evaluation.plots import plot_metric_curves
from cxrdistill.files import atomic_write_text
from cxrdistill.training.run import data_root, train_or_resume

PAPER_TEMPERATURES: tuple[float, ...] = (1, 10, 20, 30, 40, 50)
TABLE_METRICS: tuple[str, ...] = ("accuracy", "loss", "specificity", "sensitivity", "roc_auc")


def _is_undefined(value: object) -> bool:
    """NaN marks an undefined figure (e.g. the std of one run); tables show it as a blank cell."""
    return isinstance(value, float) and math.isnan(value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def cell(value: object) -> str:
        if _is_undefined(value):
            return ""
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], out: Path, stem: str, title: str) -> None:
    columns = list(rows[0])
    with open(out / f"{stem}.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if _is_undefined(v) else v for k, v in row.items()} for row in rows)
    atomic_write_text(out / f"{stem}.md", f"# {title}\n\n" + markdown_table(rows, columns))


def sweep_temperature(
    config: ExperimentConfig,
    teacher: str | Path,
    out: str | Path,
    temperatures: tuple[float, ...] = PAPER_TEMPERATURES,
    progress: bool = True,
) -> list[dict]:
    """Train one student per temperature; write ``sweep.csv``, ``sweep.md`` and ``sweep.png`` to ``out``."""
    out = Path(out)
    root = data_root(config, progress)
    rows = []
    for temperature in temperatures:
        run = copy.deepcopy(config)
        run.output_dir, run.name = str(out), f"T{temperature:g}"
        run.distill.teacher, run.distill.temperature = str(teacher), float(temperature)
        run.data.root = str(root)
        if progress:
            print(f"== temperature {temperature:g}")
        best = train_or_resume(run, progress)
        test = point_metrics(best, root, "test")
        val = point_metrics(best, root, "val")
        rows.append({"temperature": float(temperature), **{m: test[m] for m in TABLE_METRICS},
                     "val_accuracy": val["accuracy"], "val_loss": val["loss"]})
        write_sweep(rows, out, root)  # after every temperature, so a stopped sweep keeps what it finished
    return rows


def write_sweep(rows: list[dict], out: Path, root: Path) -> None:
    write_table(rows, out, "sweep", f"Distilled student by temperature (test split of {root})")
    plot_metric_curves(
        {m: [row[m] for row in rows] for m in ("accuracy", "specificity", "sensitivity", "loss")},
        [row["temperature"] for row in rows], out / "sweep.png", xlabel="temperature T",
        title="Distilled student vs temperature (test split)",
    )

"""``cxrdistill sweep-temperature``: one distilled student per temperature.

All students share one teacher and, in cached mode, one file of teacher logits (computed by the first
run, reused by the rest). Each student is scored, with 95 % patient-bootstrap intervals, on the
validation split (where a temperature should be chosen), on the held-out test split (what the paper's
table reports) and on each external set (``data.external``), at 0.5 and at its operating threshold.
"""

from __future__ import annotations

import copy
from pathlib import Path

from cxrdistill.config import ExperimentConfig
from cxrdistill.evaluation.evaluate import TABLE_METRICS, evaluation_rows, load_run_evaluation
from cxrdistill.evaluation.plots import plot_metric_curves
from cxrdistill.evaluation.tables import write_table
from cxrdistill.experiments.run import data_root, join_process_group, train_or_resume
from cxrdistill.runtime import distributed

PLOTTED_METRICS: tuple[str, ...] = ("accuracy", "specificity", "sensitivity", "loss")


def sweep_temperature(
    config: ExperimentConfig,
    teacher: str | Path,
    out: str | Path,
    temperatures: tuple[float, ...],
    progress: bool = True,
) -> list[dict]:
    """Train one student per temperature; write ``sweep.csv``, ``sweep.md`` and ``sweep.png`` to ``out``.

    One row per (temperature, evaluation set, threshold rule), metrics as :class:`MetricEstimate`.
    """
    out = Path(out)
    join_process_group(config)
    progress = progress and distributed.is_main_process()
    root = data_root(config, progress)
    rows: list[dict] = []
    for temperature in temperatures:
        run = copy.deepcopy(config)
        run.output_dir, run.name = str(out), f"T{temperature:g}"
        run.distill.teacher, run.distill.temperature = str(teacher), float(temperature)
        run.data.root = str(root)
        if progress:
            print(f"== temperature {temperature:g}")
        best = train_or_resume(run, progress)
        rows += [{"temperature": float(temperature), **row}
                 for row in evaluation_rows(load_run_evaluation(best), TABLE_METRICS)]
        if distributed.is_main_process():
            write_sweep(rows, out, root)  # after every temperature, so a stopped sweep keeps what it finished
    return rows


def write_sweep(rows: list[dict], out: Path, root: Path) -> None:
    write_table(rows, out, "sweep", f"Distilled student by temperature ({root}: val, test; external sets) — "
                                    "95 % patient-bootstrap intervals")
    test = [row for row in rows if row["set"] == "test" and row["rule"] == "0.5"]
    plot_metric_curves(
        {m: [row[m].value for row in test] for m in PLOTTED_METRICS},
        [row["temperature"] for row in test], out / "sweep.png", xlabel="temperature T",
        title="Distilled student vs temperature (test split, threshold 0.5)",
    )

"""The per-seed tables of docs/new-cohort.md (warm-up EMA, augmented teacher) from the study runs' evaluations.

Those tables pair runs of two output folders (``runs/study`` and ``runs/study-taug``), which no single
``cxrdistill compare`` report does. Run from the repository root after
``benchmarks/results/new-cohort/study/commands.sh``::

    python benchmarks/new_cohort_tables.py taug --seeds 0,1
    python benchmarks/new_cohort_tables.py ewarm --seeds 0,1,2,3

Each metric is read at the threshold chosen on validation; arms are mean ± std over seeds, differences
paired by seed with a Student-t 95 % interval (cut at ±1: the metrics are proportions).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrdistill.errors import CxrDistillError
from cxrdistill.evaluation.evaluate import load_run_evaluation
from cxrdistill.experiments.compare import paired_interval

METRICS = ("accuracy", "sensitivity", "specificity", "roc_auc")
RULE = "youden on val"
HALF_A = "kermany_test_half_a"
STUDY = "runs/study/seed{seed}/"
TAUG = "runs/study-taug/seed{seed}/"


@dataclass(frozen=True)
class Tables:
    """One set of tables: the evaluation sets, the arms (label, run folder pattern) and the paired differences."""

    sets: tuple[str, ...]
    arms: tuple[tuple[str, str], ...]
    differences: tuple[tuple[str, str, str], ...]


TABLES: dict[str, Tables] = {
    "taug": Tables(
        sets=(HALF_A,),
        arms=(("cached, unaugmented teacher", STUDY + "student_kd"),
              ("consistent, unaugmented teacher", STUDY + "student_kd_consistent"),
              ("cached, augmented teacher", TAUG + "student_kd"),
              ("consistent, augmented teacher", TAUG + "student_kd_consistent"),
              ("cached + warm-up EMA, augmented teacher", TAUG + "student_kd_ewarm")),
        differences=(("cached + warm-up EMA (aug. teacher) - cached (study)", TAUG + "student_kd_ewarm",
                      STUDY + "student_kd"),
                     ("cached + warm-up EMA (aug. teacher) - plain (study)", TAUG + "student_kd_ewarm",
                      STUDY + "student"),
                     ("consistent - cached (aug. teacher)", TAUG + "student_kd_consistent", TAUG + "student_kd"),
                     ("cached: aug. - unaug. teacher", TAUG + "student_kd", STUDY + "student_kd"),
                     ("consistent: aug. - unaug. teacher", TAUG + "student_kd_consistent",
                      STUDY + "student_kd_consistent")),
    ),
    "ewarm": Tables(
        sets=(HALF_A, "test"),
        arms=(("plain", STUDY + "student"), ("plain, warm-up EMA", STUDY + "student_ewarm"),
              ("cached KD", STUDY + "student_kd"), ("cached KD, warm-up EMA", STUDY + "student_kd_ewarm")),
        differences=(("plain: warm-up EMA - none", STUDY + "student_ewarm", STUDY + "student"),
                     ("cached KD: warm-up EMA - none", STUDY + "student_kd_ewarm", STUDY + "student_kd"),
                     ("cached KD - plain, both warm-up EMA", STUDY + "student_kd_ewarm", STUDY + "student_ewarm")),
    ),
}
"""The tables docs/new-cohort.md shows, by name."""


def run_metrics(run: Path, set_name: str) -> np.ndarray:
    """One run's METRICS on one evaluation set at the validation-chosen threshold, from its evaluation.json."""
    sets = load_run_evaluation(run / "best.safetensors")  # the file beside the run's checkpoints
    if set_name not in sets:
        raise CxrDistillError(f"{run}: no evaluation set {set_name!r} (has {sorted(sets)})")
    result = next((entry for entry in sets[set_name].results if entry.rule == RULE), None)
    if result is None:
        raise CxrDistillError(f"{run}: set {set_name!r} has no result at the rule {RULE!r}")
    return np.array([result.metrics[metric].value for metric in METRICS])


def seed_matrix(pattern: str, seeds: list[int], set_name: str) -> np.ndarray:
    """Rows: seeds; columns: METRICS."""
    return np.array([run_metrics(Path(pattern.format(seed=seed)), set_name) for seed in seeds])


def arm_table(tables: Tables, seeds: list[int], set_name: str) -> str:
    """A Markdown table of each arm's mean ± std over seeds."""
    lines = ["| arm | seeds | accuracy | sensitivity | specificity | ROC AUC |", "|---|---|---|---|---|---|"]
    for label, pattern in tables.arms:
        values = seed_matrix(pattern, seeds, set_name)
        cells = ([f"{mean:.3f} ± {std:.3f}" for mean, std in zip(values.mean(0), values.std(0, ddof=1), strict=True)]
                 if len(seeds) > 1 else [f"{mean:.3f}" for mean in values.mean(0)])
        lines.append(f"| {label} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def difference_line(label: str, better: str, baseline: str, seeds: list[int], set_name: str) -> str:
    """``label: accuracy +0.021 [+0.007, +0.036]; ...``, paired by seed."""
    a, b = seed_matrix(better, seeds, set_name), seed_matrix(baseline, seeds, set_name)
    parts = []
    for column, metric in enumerate(METRICS):
        estimate = paired_interval(list(a[:, column]), list(b[:, column]), bound=1.0)
        interval = "" if len(seeds) < 2 else f" [{estimate.low:+.3f}, {estimate.high:+.3f}]"
        parts.append(f"{metric} {estimate.value:+.3f}{interval}")
    return f"{label}: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("tables", choices=sorted(TABLES), help="which tables of docs/new-cohort.md")
    options.add_argument("--seeds", default="0,1", help="comma-separated seeds, e.g. 0,1,2,3")
    args = options.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    tables = TABLES[args.tables]
    for set_name in tables.sets:
        print(f"{set_name}\n{arm_table(tables, seeds, set_name)}")
        for label, better, baseline in tables.differences:
            print(difference_line(label, better, baseline, seeds, set_name))


if __name__ == "__main__":
    main()

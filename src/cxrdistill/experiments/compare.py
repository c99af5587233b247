"""``cxrdistill compare``: teacher vs plain student vs distilled student, over several seeds — Table VI, honestly.

Every arm is trained once per seed on the same patient-wise split (``data.split_seed`` is shared,
``train.seed`` varies) and scored on the held-out test split and on each external set
(``data.external``), at threshold 0.5 and at each run's operating threshold (chosen on val). The
tables give, per evaluation set, each metric's mean and sample standard deviation, and the paired
difference between two arms (distilled − plain by default) with a Student-t 95 % interval over seeds
(``scipy.stats.ttest_rel``): pairing by seed removes the variation both arms share. The teacher is
trained once (seed of the first run) unless ``teacher_per_seed`` is set — it is the costly arm.

The same machinery serves any ablation: arms are just named configs (e.g. AlexNet with and without
the SRM front-end). An arm whose config names a teacher is distilled from the comparison's teacher.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from cxrdistill.config import ConfigError, ExperimentConfig
from cxrdistill.evaluation.evaluate import TABLE_METRICS, load_run_evaluation
from cxrdistill.evaluation.metrics import MetricEstimate, summarize_runs
from cxrdistill.evaluation.plots import plot_comparison
from cxrdistill.evaluation.tables import write_table
from cxrdistill.experiments.run import data_root, join_process_group, train_or_resume
from cxrdistill.files import atomic_write_json
from cxrdistill.runtime import distributed

COMPARED_METRICS: tuple[str, ...] = (*TABLE_METRICS, "precision", "f1")
EVALUATION_KEYS: tuple[str, ...] = ("set", "threshold")
"""What a run's rows are told apart by besides arm and seed: the evaluation set and the threshold rule."""


@dataclass
class Comparison:
    runs: list[dict] = field(default_factory=list)
    """One row per (arm, seed, evaluation set, threshold rule): that run's metrics there."""
    summary: list[dict] = field(default_factory=list)
    difference: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"runs": self.runs, "summary": self.summary, "difference": self.difference}


def run_rows(checkpoint: Path) -> list[dict]:
    """A trained run's point metrics on each evaluation set at each threshold rule (from its evaluation.json)."""
    return [{"set": name, "threshold": result.rule, **{m: result.metrics[m].value for m in COMPARED_METRICS}}
            for name, evaluation in load_run_evaluation(checkpoint).items() if name != "val"
            for result in evaluation.results]


def paired_interval(a: list[float], b: list[float], confidence: float = 0.95,
                    bound: float | None = None) -> MetricEstimate:
    """Mean of ``a - b`` over pairs with its Student-t interval; with one pair the interval is undefined (NaN).

    ``bound``: the largest size the difference can take (1 for proportions); few seeds with a wide spread
    give a t-interval past it, which is cut there rather than shown as an impossible value.
    """
    mean = float(np.mean(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))
    if len(a) < 2:
        return MetricEstimate(mean, float("nan"), float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # identical differences: scipy warns, the interval is exact
        interval = stats.ttest_rel(a, b).confidence_interval(confidence)
    low, high = float(interval.low), float(interval.high)
    if bound is not None:
        low, high = max(low, -bound), min(high, bound)
    return MetricEstimate(mean, low, high)


UNBOUNDED_METRICS: frozenset[str] = frozenset({"loss"})
"""Compared metrics that are not proportions (all others lie in [0, 1], so their differences in [-1, 1])."""


def evaluation_groups(runs: list[dict]) -> list[tuple[str, str]]:
    """The (set, threshold rule) pairs present, in first-seen order."""
    return list(dict.fromkeys(tuple(r[k] for k in EVALUATION_KEYS) for r in runs))


def summarize(runs: list[dict], arms: list[str]) -> list[dict]:
    """Mean and std over seeds per evaluation set, threshold rule and arm (one seed: std NaN, a blank)."""
    rows = []
    for group in evaluation_groups(runs):
        for arm in arms:
            of_arm = [r for r in runs if r["arm"] == arm and tuple(r[k] for k in EVALUATION_KEYS) == group]
            row: dict = {**dict(zip(EVALUATION_KEYS, group, strict=True)), "arm": arm, "seeds": len(of_arm)}
            for metric in COMPARED_METRICS:
                row[f"{metric}_mean"], row[f"{metric}_std"] = summarize_runs([r[metric] for r in of_arm])
            rows.append(row)
    return rows


def paired_differences(runs: list[dict], better: str, baseline: str) -> list[dict]:
    """``better - baseline`` per evaluation set, threshold rule and metric, paired by seed."""
    rows = []
    for group in evaluation_groups(runs):
        by_seed = {(r["arm"], r["seed"]): r for r in runs if tuple(r[k] for k in EVALUATION_KEYS) == group}
        seeds = sorted(s for a, s in by_seed if a == better and (baseline, s) in by_seed)
        for metric in COMPARED_METRICS:
            estimate = paired_interval([by_seed[(better, s)][metric] for s in seeds],
                                       [by_seed[(baseline, s)][metric] for s in seeds],
                                       bound=None if metric in UNBOUNDED_METRICS else 1.0)
            rows.append({**dict(zip(EVALUATION_KEYS, group, strict=True)), "metric": metric,
                         "difference": f"{better} - {baseline}", "mean": estimate.value,
                         "ci95_low": estimate.low, "ci95_high": estimate.high, "pairs": len(seeds)})
    return rows


def compare(
    arms: dict[str, ExperimentConfig],
    out: str | Path,
    seeds: list[int],
    teacher: ExperimentConfig | None = None,
    teacher_checkpoint: str | Path | None = None,
    difference: tuple[str, str] | None = None,
    teacher_per_seed: bool = False,
    progress: bool = True,
    report: str = "compare",
) -> Comparison:
    """Train every arm for every seed, score on the test and external sets, write ``{report}.{json,csv,md,png}``.

    Runs live in ``out/seed{N}/{arm}``; a later comparison in the same folder reuses finished runs of
    arms with the same name (e.g. the plain student of the KD comparison in an ablation).
    """
    out = Path(out)
    first = next(iter(arms.values()))
    join_process_group(first)
    progress = progress and distributed.is_main_process()
    root = data_root(first, progress)
    result = Comparison()
    teachers: dict[int, Path] = {}

    def teacher_for(seed: int) -> Path:
        if teacher_checkpoint is not None:
            return Path(teacher_checkpoint)
        if teacher is None:
            raise ConfigError("an arm distils (it names distill.teacher) but the comparison has no teacher")
        key = seed if teacher_per_seed else seeds[0]
        if key not in teachers:
            teachers[key] = train_arm("teacher", teacher, key)
        return teachers[key]

    def train_arm(name: str, config: ExperimentConfig, seed: int) -> Path:
        run = copy.deepcopy(config)
        run.output_dir, run.name = str(out / f"seed{seed}"), name
        run.train.seed, run.data.root = seed, str(root)
        if run.distill.teacher is not None:
            run.distill.teacher = str(teacher_for(seed))
        if progress:
            print(f"== {name}, seed {seed}")
        best = train_or_resume(run, progress)
        result.runs += [{"arm": name, "seed": seed, **row} for row in run_rows(best)]
        return best

    for seed in seeds:
        if teacher is not None and (teacher_per_seed or seed == seeds[0]):
            teacher_for(seed)
        for name, config in arms.items():
            train_arm(name, config, seed)

    arm_names = (["teacher"] if teacher is not None else []) + list(arms)
    result.summary = summarize(result.runs, arm_names)
    if difference is not None:
        result.difference = paired_differences(result.runs, *difference)
    if distributed.is_main_process():
        write_results(result, out, root, report)
    return result


def write_results(result: Comparison, out: Path, root: Path, report: str) -> None:
    atomic_write_json(out / f"{report}.json", json.loads(json.dumps(result.as_dict(), default=float)))
    write_table(result.summary, out, report,
                f"Comparison on the test split of {root} and the external sets (mean and std over seeds)")
    if result.difference:
        write_table(result.difference, out, f"{report}-difference",
                    "Paired difference over seeds per evaluation set (Student-t 95% CI)")
    for set_name, _ in evaluation_groups(result.runs):
        rows = [row for row in result.summary if row["set"] == set_name and row["threshold"] == "0.5"]
        suffix = "" if set_name == "test" else f"-{set_name}"
        plot_comparison(rows, ("accuracy", "specificity", "sensitivity", "roc_auc"), out / f"{report}{suffix}.png",
                        title=f"{set_name} metrics by arm at threshold 0.5 (mean ± std over seeds)")

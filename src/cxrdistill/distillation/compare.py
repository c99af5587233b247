"""``cxrdistill compare``: teacher vs plain student vs distilled student, over several seeds — Table VI, honestly.

Every arm is trained once per seed on the same patient-wise split (``data.split_seed`` is shared,
``train.seed`` varies) and scored on the held-out test split. The table gives each metric's mean and
sample standard deviation, and the paired difference between two arms (distilled − plain by default)
with a Student-t 95 % interval over seeds: pairing by seed removes the variation both arms share. The
teacher is trained once (seed of the first run) unless ``teacher_per_seed`` is set — it is the costly arm.

The same machinery serves any ablation: arms are just named configs (e.g. AlexNet with and without
the SRM front-end). An arm whose config names a teacher is distilled from the comparison's teacher.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from cxrdistill.config import ConfigError, ExperimentConfig
from cxrdistill.distillation.sweep import TABLE_METRICS, write_table
from cxrdistill.evaluation.evaluate import point_metrics
from cxrdistill.evaluation.plots import plot_comparison
from cxrdistill.files import atomic_write_json
from cxrdistill.training.run import data_root, train_or_resume

COMPARED_METRICS: tuple[str, ...] = (*TABLE_METRICS, "precision", "f1")


@dataclass
class Comparison:
    runs: list[dict] = field(default_factory=list)
    """One row per (arm, seed): the test metrics of that run."""
    summary: list[dict] = field(default_factory=list)
    difference: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"runs": self.runs, "summary": self.summary, "difference": self.difference}


def paired_t_interval(a: list[float], b: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its Student-t interval; with one pair the interval is undefined (NaN)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean = float(diff.mean())
    if diff.size < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, diff.size - 1) * diff.std(ddof=1) / np.sqrt(diff.size)
    return mean, mean - float(half), mean + float(half)


def summarize(runs: list[dict], arms: list[str]) -> list[dict]:
    rows = []
    for arm in arms:
        of_arm = [r for r in runs if r["arm"] == arm]
        row: dict = {"arm": arm, "seeds": len(of_arm)}
        for metric in COMPARED_METRICS:
            values = np.array([r[metric] for r in of_arm], dtype=float)
            row[f"{metric}_mean"] = float(values.mean())
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def paired_differences(runs: list[dict], better: str, baseline: str) -> list[dict]:
    by_seed = {(r["arm"], r["seed"]): r for r in runs}
    seeds = sorted(s for a, s in by_seed if a == better and (baseline, s) in by_seed)
    rows = []
    for metric in COMPARED_METRICS:
        a = [by_seed[(better, s)][metric] for s in seeds]
        b = [by_seed[(baseline, s)][metric] for s in seeds]
        mean, low, high = paired_t_interval(a, b)
        rows.append({"metric": metric, "difference": f"{better} - {baseline}", "mean": mean,
                     "ci95_low": low, "ci95_high": high, "pairs": len(seeds)})
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
    """Train every arm for every seed, score on the test split, write ``{report}.{json,csv,md,png}`` to ``out``.

    Runs live in ``out/seed{N}/{arm}``; a later comparison in the same folder reuses finished runs of
    arms with the same name (e.g. the plain student of the KD comparison in an ablation).
    """
    out = Path(out)
    first = next(iter(arms.values()))
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
        result.runs.append({"arm": name, "seed": seed, **point_metrics(best, root, "test")})
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
    write_results(result, out, root, report)
    return result


def write_results(result: Comparison, out: Path, root: Path, report: str) -> None:
    atomic_write_json(out / f"{report}.json", json.loads(json.dumps(result.as_dict(), default=float)))
    write_table(result.summary, out, report, f"Comparison on the test split of {root} (mean and std over seeds)")
    if result.difference:
        write_table(result.difference, out, f"{report}-difference",
                    "Paired difference over seeds (Student-t 95% CI)")
    plot_comparison(result.summary, ("accuracy", "specificity", "sensitivity", "roc_auc"), out / f"{report}.png")

"""``benchmarks/new_cohort_tables.py``: the per-seed tables of docs/new-cohort.md from runs' evaluation.json."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from cxrdistill.errors import CxrDistillError
from cxrdistill.evaluation.evaluate import SetEvaluation, ThresholdedMetrics
from cxrdistill.evaluation.metrics import MetricEstimate

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "new_cohort_tables.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("new_cohort_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def write_run(run: Path, accuracy: dict[str, float]) -> None:
    """An evaluation.json as training writes it: per set, the metrics at 0.5 and at the val-chosen threshold."""
    def result(rule: str, value: float) -> ThresholdedMetrics:
        metrics = {m: MetricEstimate(value, value - 0.01, value + 0.01)
                   for m in ("accuracy", "sensitivity", "specificity", "roc_auc")}
        return ThresholdedMetrics(0.5, rule, metrics, [[1, 0], [0, 1]])

    sets = {name: SetEvaluation(name, name, 10, 5, [result("0.5", 0.0), result("youden on val", value)])
            for name, value in accuracy.items()}
    run.mkdir(parents=True)
    (run / "evaluation.json").write_text(json.dumps({"sets": {n: s.as_dict() for n, s in sets.items()}}))


def test_tables_pair_runs_by_seed_at_the_val_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    values = {"student": (0.80, 0.82), "student_ewarm": (0.84, 0.88), "student_kd": (0.81, 0.83),
              "student_kd_ewarm": (0.85, 0.85)}
    for arm, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            write_run(tmp_path / f"runs/study/seed{seed}/{arm}", {"kermany_test_half_a": value, "test": 0.9})
    load().main(["ewarm", "--seeds", "0,1"])
    out = capsys.readouterr().out
    assert "| plain, warm-up EMA | 2 | 0.860 ± 0.028 |" in out
    # paired by seed: +0.04 and +0.06, mean +0.05 with a t-interval of half-width 12.706 * 0.01
    assert "plain: warm-up EMA - none: accuracy +0.050 [-0.077, +0.177]" in out
    assert "test\n" in out


def test_a_run_without_the_set_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs/study/seed0/student", {"test": 0.9})
    with pytest.raises(CxrDistillError, match="no evaluation set 'kermany_test_half_a'"):
        load().run_metrics(tmp_path / "runs/study/seed0/student", "kermany_test_half_a")

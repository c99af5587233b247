"""External validation sets: evaluate on any labelled folder, after every run, and in sweeps and comparisons."""

import json
import shutil

import numpy as np
import pytest
import yaml
from conftest import tiny_config
from scipy import stats
from typer.testing import CliRunner

from cxrdistill.cli import app
from cxrdistill.config import ConfigError, load_config
from cxrdistill.evaluation.evaluate import evaluate_checkpoint, predict_checkpoint
from cxrdistill.evaluation.operating_point import choose_threshold
from cxrdistill.experiments.compare import paired_interval
from cxrdistill.experiments.run import run_experiment
from cxrdistill.runtime.checkpoint import load_checkpoint, load_training_state


@pytest.fixture(scope="module")
def external_sets(synth_root, tmp_path_factory):
    """A bare NORMAL/ + PNEUMONIA/ folder and a Kermany root holding only test/ (both copies of the test split)."""
    base = tmp_path_factory.mktemp("external")
    bare, test_only = base / "site_bare", base / "site_root"
    for class_name in ("NORMAL", "PNEUMONIA"):
        shutil.copytree(synth_root / "test" / class_name, bare / class_name)
        shutil.copytree(synth_root / "test" / class_name, test_only / "test" / class_name)
    return bare, test_only


@pytest.fixture(scope="module")
def trained(synth_root, external_sets, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("external-run")
    config = tiny_config(synth_root, workdir, "train.epochs=1", f"data.external={[str(p) for p in external_sets]}")
    return run_experiment(config, progress=False)


@pytest.mark.slow
def test_evaluate_a_root_that_holds_only_test(trained, external_sets, tmp_path):
    _, test_only = external_sets
    report = evaluate_checkpoint(trained.best_checkpoint, test_only, out_dir=tmp_path, n_bootstrap=10, progress=False)
    assert report.count == sum(1 for p in (test_only / "test").rglob("*.jpeg"))
    assert report.data == f"{test_only}:test"
    with pytest.raises(ValueError, match="no val/ folder"):
        evaluate_checkpoint(trained.best_checkpoint, test_only, "val", tmp_path, n_bootstrap=10, progress=False)


def test_data_external_is_a_list_of_folders():
    config = load_config(None, ["data.external=[/a, /b]"])
    assert config.data.external == ["/a", "/b"] and load_config(None).data.external == []
    with pytest.raises(ConfigError, match="data.external: expected a list"):
        load_config(None, ["data.external=/a"])


@pytest.mark.slow
def test_a_run_is_evaluated_on_test_and_every_external_set(trained, external_sets):
    bare, test_only = external_sets
    saved = json.loads((trained.run_dir / "evaluation.json").read_text())
    assert list(saved["sets"]) == ["val", "test", bare.name, test_only.name]
    n_test = sum(1 for _ in bare.rglob("*.jpeg"))
    threshold = saved["operating_point"]["threshold"]
    for name in ("test", bare.name, test_only.name):
        entry = saved["sets"][name]
        assert entry["count"] == n_test and 0 < entry["patients"] <= n_test
        assert [r["threshold"] for r in entry["results"]] == [0.5, threshold]
        for result in entry["results"]:
            assert np.sum(result["confusion"]) == n_test
            for estimate in result["metrics"].values():
                assert estimate["low"] <= estimate["value"] <= estimate["high"] or np.isnan(estimate["low"])
    # The same images under three names give the same numbers.
    assert saved["sets"][bare.name]["results"] == saved["sets"]["test"]["results"]
    table = (trained.run_dir / "evaluation.md").read_text()
    assert f"| {bare.name} |" in table and f"| {test_only.name} |" in table


@pytest.mark.slow
def test_two_external_sets_with_one_name_are_refused(synth_root, external_sets, tmp_path):
    bare, _ = external_sets
    twin = tmp_path / "elsewhere" / bare.name
    shutil.copytree(bare, twin)
    config = tiny_config(synth_root, tmp_path, "train.epochs=1", f"data.external=[{bare}, {twin}]")
    with pytest.raises(ValueError, match="distinct names"):
        run_experiment(config, progress=False)


def test_paired_interval_is_students_t():
    a, b = [0.90, 0.94, 0.91, 0.95], [0.88, 0.90, 0.92, 0.91]
    diff = np.subtract(a, b)
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    estimate = paired_interval(a, b)
    assert estimate.value == pytest.approx(diff.mean())
    assert (estimate.low, estimate.high) == pytest.approx((diff.mean() - half, diff.mean() + half))
    single = paired_interval([0.9], [0.8])
    assert single.value == pytest.approx(0.1) and np.isnan(single.low) and np.isnan(single.high)


def test_paired_interval_of_proportions_stays_within_their_range():
    # five seeds of specificity, one collapsed arm: the t-interval would reach below -100 points
    better, baseline = [0.0] * 5, [0.80, 0.80, 0.81, 0.0, 0.79]
    unbounded = paired_interval(better, baseline)
    assert unbounded.low < -1.0
    bounded = paired_interval(better, baseline, bound=1.0)
    assert bounded.low == -1.0 and bounded.high == pytest.approx(unbounded.high) and bounded.value == unbounded.value


@pytest.mark.slow
def test_sweep_and_compare_report_external_sets(trained, synth_root, external_sets, tmp_path):
    bare, _ = external_sets
    common = [f"data.root={synth_root}", f"data.cache_dir={tmp_path / 'cache'}", "data.image_size=32",
              "data.batch_size=8", "data.num_workers=0", "model.name=resnet18", "train.epochs=1",
              "train.early_stopping_patience=null", "evaluation.n_bootstrap=10", f"output_dir={tmp_path / 'runs'}"]
    runner = CliRunner()
    result = runner.invoke(app, ["sweep-temperature", "--quiet", "--teacher", str(trained.best_checkpoint),
                                 "--temperatures", "2", "--external", str(bare), "--out", str(tmp_path / "sweep"),
                                 *common])
    assert result.exit_code == 0, result.output
    header = (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()[0].split(",")
    assert {"set", "rule", "accuracy", "accuracy_low", "accuracy_high"} <= set(header)
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| 2.0000 | test |" in table and f"| 2.0000 | {bare.name} |" in table

    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"name": "x"}))
    result = runner.invoke(app, ["compare", "--quiet", "--no-teacher", "--arm", f"a={plain}", "--arm", f"b={plain}",
                                 "--difference", "a,b", "--seeds", "1", "--external", str(bare),
                                 "--out", str(tmp_path / "cmp"), *common])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert {(row["set"], row["arm"]) for row in saved["summary"]} == {
        (s, a) for s in ("test", bare.name) for a in ("a", "b")}
    assert {row["set"] for row in saved["difference"]} == {"test", bare.name}
    assert (tmp_path / "cmp" / "compare.png").is_file() and (tmp_path / "cmp" / f"compare-{bare.name}.png").is_file()


@pytest.mark.slow
def test_training_stores_an_operating_point_chosen_on_val(trained, synth_root):
    for checkpoint in (trained.best_checkpoint, trained.last_checkpoint):
        point = load_checkpoint(checkpoint)["metadata"]["operating_point"]
        assert point["policy"] == "youden" and point["chosen_on"] == "val" and point["data"] == f"{synth_root}:val"
        _, predictions, _, _ = predict_checkpoint(checkpoint, synth_root, "val", progress=False)
        assert point["threshold"] == choose_threshold(predictions.labels, predictions.prob_positive, "youden")
        assert point["count"] == len(predictions.labels)
    assert trained.last_checkpoint.is_file() and load_training_state(trained.last_checkpoint)["epoch"]

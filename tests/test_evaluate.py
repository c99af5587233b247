"""Evaluating checkpoints: on the run's split and on a bare external folder; files and plots written."""

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from cxrdistill.evaluation.evaluate import evaluate_checkpoint, point_metrics
from cxrdistill.experiments.run import run_experiment

pytestmark = pytest.mark.slow  # every test here trains a model


@pytest.fixture(scope="module")
def checkpoint(synth_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("eval")
    return run_experiment(tiny_config(synth_root, workdir, "train.epochs=1"), progress=False).best_checkpoint


def test_evaluate_on_the_test_split(checkpoint, synth_root, tmp_path):
    report = evaluate_checkpoint(checkpoint, synth_root, "test", tmp_path / "out", n_bootstrap=50, progress=False)
    n_test = sum(1 for _ in (synth_root / "test").rglob("*.jpeg"))
    assert report.count == n_test and np.sum(report.confusion) == n_test
    for name in ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "loss", "ece"):
        assert name in report.metrics
    accuracy = report.metrics["accuracy"]
    assert accuracy.low <= accuracy.value <= accuracy.high
    with open(tmp_path / "out" / "predictions.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == n_test and {r["label"] for r in rows} == {"NORMAL", "PNEUMONIA"}
    correct = np.mean([int(r["correct"]) for r in rows])
    assert correct == pytest.approx(accuracy.value)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["metrics"]["accuracy"]["value"] == pytest.approx(accuracy.value)
    for plot in ("roc.png", "confusion.png", "reliability.png"):
        assert (tmp_path / "out" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert point_metrics(checkpoint, synth_root, "test")["accuracy"] == pytest.approx(accuracy.value)


def test_evaluate_on_a_bare_folder_of_large_originals(checkpoint, synth_root, tmp_path):
    """External test sets come as NORMAL/ + PNEUMONIA/ folders of full-size grey JPEGs and 16-bit PNGs."""
    external = tmp_path / "external"
    for class_name in ("NORMAL", "PNEUMONIA"):
        shutil.copytree(synth_root / "test" / class_name, external / class_name)
    big = np.random.default_rng(0).integers(0, 255, (1200, 1500), dtype=np.uint8)
    Image.fromarray(big, mode="L").save(external / "NORMAL" / "IM-9999-0001.jpeg")
    Image.fromarray(big.astype(np.uint16) * 16).save(external / "PNEUMONIA" / "person9999_virus_1.png")
    report = evaluate_checkpoint(checkpoint, external, out_dir=tmp_path / "out", n_bootstrap=20, progress=False)
    assert report.count == sum(1 for p in external.rglob("*") if p.is_file())
    assert report.data == str(external)


def test_unknown_split_is_named(checkpoint, synth_root, tmp_path):
    with pytest.raises(ValueError, match="no 'holdout' split; available"):
        evaluate_checkpoint(checkpoint, synth_root, "holdout", tmp_path, n_bootstrap=10, progress=False)


def test_a_moved_checkpoint_is_evaluated_with_the_local_cache_not_the_stored_paths(synth_root, tmp_path, monkeypatch):
    """The training machine's cache and split locations travel in the checkpoint; evaluation must not write there."""
    trained_at, data = tmp_path / "training-machine", tmp_path / "training-machine" / "data"
    shutil.copytree(synth_root, data)
    run_experiment(tiny_config(data, trained_at, "train.epochs=1"), progress=False)
    here = tmp_path / "this-machine"
    shutil.move(trained_at, here)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    report = evaluate_checkpoint(here / "runs" / "tiny" / "best.safetensors", here / "data", "test",
                                 here / "eval", n_bootstrap=5, progress=False)
    assert report.count == sum(1 for _ in (here / "data" / "test").rglob("*.jpeg"))
    val = evaluate_checkpoint(here / "runs" / "tiny" / "best.safetensors", here / "data", "val",
                              here / "eval-val", n_bootstrap=5, progress=False, cache_dir=tmp_path / "chosen")
    assert val.count > 0
    assert not trained_at.exists(), sorted(str(p) for p in trained_at.rglob("*"))
    assert any((tmp_path / "user-cache" / "cxrdistill").iterdir()) and any((tmp_path / "chosen").iterdir())

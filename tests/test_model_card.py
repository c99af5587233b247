"""``export`` writes MODEL_CARD.md beside the exported model, from the checkpoint and its run's evaluation."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import tiny_config

from cxrdistill.config import load_config
from cxrdistill.deployment.export import export_onnx
from cxrdistill.deployment.model_card import MODEL_CARD
from cxrdistill.runtime.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint


@pytest.mark.slow
def test_export_writes_a_model_card_with_metrics_threshold_and_limits(synth_root, tmp_path):
    from cxrdistill.experiments.run import run_experiment

    external = shutil.copytree(synth_root / "test", tmp_path / "site_b")
    config = tiny_config(synth_root, tmp_path, "train.epochs=1", f"data.external=[{external}]")
    run = run_experiment(config, progress=False)
    exported = export_onnx(run.final_checkpoint, tmp_path / "deploy" / "student.onnx")
    card = (exported.path.parent / MODEL_CARD).read_text()
    point = load_checkpoint(run.final_checkpoint)["metadata"]["operating_point"]
    evaluation = json.loads((run.run_dir / "evaluation.json").read_text())
    accuracy = evaluation["sets"]["site_b"]["results"][0]["metrics"]["accuracy"]
    assert f"0.5, 0.5 (default): the stored {point['policy']} on val ({point['threshold']:.4g})" in card
    assert f"{accuracy['value']:.3f} [{accuracy['low']:.3f}, {accuracy['high']:.3f}]" in card
    for text in ("| test (", "| site_b (", "not a medical device", "paediatric", "single centre",
                 "10.17632/rscbjbr9sj.2", "resnet18 at 32 px", "supervised on the labels only"):
        assert text in card, text


def test_model_card_says_when_a_model_was_never_evaluated(tmp_path):
    from cxrdistill.models import create_model

    config = load_config(None, ["model.name=resnet18"])
    checkpoint = save_checkpoint(tmp_path / "m.pt", create_model(config.model, image_size=32),
                                 checkpoint_metadata(config, 32))
    export_onnx(checkpoint, tmp_path / "m.onnx")
    card = (tmp_path / MODEL_CARD).read_text()
    assert "was not evaluated after training" in card and "0.5 (default): no operating point stored" in card


def test_model_card_states_the_shortcut_audit_of_the_training_data(synth_root, tmp_path):
    from cxrdistill.data.audit import audit_dataset
    from cxrdistill.models import create_model

    config = load_config(None, ["model.name=resnet18"])
    checkpoint = save_checkpoint(tmp_path / "m.pt", create_model(config.model, image_size=32),
                                 checkpoint_metadata(config, 32))
    export_onnx(checkpoint, tmp_path / "m.onnx")
    assert "Shortcut audit" not in (tmp_path / MODEL_CARD).read_text()
    shortcuts = audit_dataset(synth_root, progress=False, out_dir=tmp_path).shortcuts
    export_onnx(checkpoint, tmp_path / "m.onnx")
    card = (tmp_path / MODEL_CARD).read_text()
    auc = max(shortcuts["folders"]["train"]["auc"]["all"].values())
    assert f"* Shortcut audit of `{synth_root}`" in card
    assert f"ROC AUC {auc:.3f} (cross-validated by patient on train;" in card

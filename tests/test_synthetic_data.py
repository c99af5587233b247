"""No training on made-up X-rays without asking: a run needs data.root or data.synthetic, and a model trained
on synthetic images says so in its sidecar and warns whoever evaluates, predicts with, serves or exports it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import tiny_config
from typer.testing import CliRunner

from cxrdistill.cli import app
from cxrdistill.config import ConfigError, load_config
from cxrdistill.experiments.run import MissingDataError, data_root, run_experiment
from cxrdistill.runtime.checkpoint import load_checkpoint, update_checkpoint_metadata
from cxrdistill.runtime.served import SyntheticDataWarning

runner = CliRunner()


def test_a_run_without_data_root_is_refused_saying_how_to_get_data(tmp_path):
    config = load_config(None, [f"output_dir={tmp_path / 'runs'}", f"data.synthetic_dir={tmp_path / 'synthetic'}"])
    with pytest.raises(MissingDataError) as error:
        run_experiment(config, progress=False)
    message = str(error.value)
    for advice in ("data.root", "cxrdistill demo", "data.synthetic: true", "--synthetic"):
        assert advice in message
    assert not (tmp_path / "synthetic").exists() and not (tmp_path / "runs").exists()


def test_data_root_and_synthetic_together_are_refused(synth_root, tmp_path):
    config = tiny_config(synth_root, tmp_path, "data.synthetic=true")
    with pytest.raises(ConfigError, match="data.synthetic"):
        data_root(config, progress=False)


def test_synthetic_set_asked_for_is_written_and_used(tmp_path, capsys):
    config = load_config(None, ["data.synthetic=true", f"data.synthetic_dir={tmp_path / 'synthetic'}"])
    root = data_root(config)
    assert root == tmp_path / "synthetic" and (root / "train" / "NORMAL").is_dir()
    assert "SYNTHETIC" in capsys.readouterr().out


@pytest.fixture(scope="module")
def synthetic_checkpoint(synth_root, tmp_path_factory) -> Path:
    """A tiny run on the (synthetic) test set: its sidecar must say what it was trained on."""
    result = run_experiment(tiny_config(synth_root, tmp_path_factory.mktemp("synthetic-run"), "train.epochs=1"),
                            progress=False)
    return result.final_checkpoint


def test_a_synthetic_checkpoint_says_so_in_its_sidecar(synthetic_checkpoint):
    assert load_checkpoint(synthetic_checkpoint)["metadata"]["synthetic_data"] is True


def test_a_checkpoint_of_real_data_says_not_synthetic(synth_root, tmp_path):
    unmarked = shutil.ignore_patterns(".*", "SYNTHETIC.md")  # the synthetic set's marks
    real_looking = Path(shutil.copytree(synth_root, tmp_path / "data", ignore=unmarked))
    result = run_experiment(tiny_config(real_looking, tmp_path, "train.epochs=1"), progress=False)
    assert load_checkpoint(result.final_checkpoint)["metadata"]["synthetic_data"] is False


def test_evaluate_and_predict_warn_when_the_model_saw_only_synthetic_images(synthetic_checkpoint, synth_root):
    from cxrdistill.deployment.predict import predict_files
    from cxrdistill.evaluation.evaluate import evaluate_checkpoint

    with pytest.warns(SyntheticDataWarning, match="SYNTHETIC"):
        evaluate_checkpoint(synthetic_checkpoint, synth_root, "test", synthetic_checkpoint.parent / "eval",
                            n_bootstrap=5, progress=False)
    image = next((synth_root / "test" / "NORMAL").iterdir())
    with pytest.warns(SyntheticDataWarning):
        predict_files(synthetic_checkpoint, [image], progress=False)


def test_export_and_serve_warn_and_the_onnx_file_keeps_the_mark(small_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    from cxrdistill.deployment.export import export_onnx
    from cxrdistill.deployment.predict import Predictor

    marked = update_checkpoint_metadata(small_checkpoint, {"synthetic_data": True}, tmp_path / "synthetic.pt")
    with pytest.warns(SyntheticDataWarning):
        exported = export_onnx(marked, tmp_path / "synthetic.onnx").path
    with pytest.warns(SyntheticDataWarning):  # what the service loads
        Predictor(exported)


def test_cli_train_synthetic_flag_asks_for_the_synthetic_set(tmp_path):
    result = runner.invoke(app, ["train", "--synthetic", "--quiet", "data.root=elsewhere"])
    assert result.exit_code == 2 and "data.synthetic" in result.output, result.output

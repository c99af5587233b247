"""Temperature scaling and local recalibration: the fitted T recovers a known one and is applied everywhere."""

import json
import shutil

import numpy as np
import pytest
from scipy.special import expit, logit
from typer.testing import CliRunner

from cxrdistill.cli import app
from cxrdistill.config import load_config
from cxrdistill.data.patients import patient_id
from cxrdistill.deployment.export import export_onnx
from cxrdistill.deployment.predict import predict_files
from cxrdistill.evaluation.evaluate import evaluate_checkpoint
from cxrdistill.evaluation.operating_point import fit_temperature
from cxrdistill.models import create_model
from cxrdistill.runtime.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint

runner = CliRunner()


@pytest.mark.parametrize("true_temperature", [0.5, 3.0])
def test_fitted_temperature_recovers_a_known_one(true_temperature):
    """Labels drawn from softmax(z); the model's logits are z * T, so softmax(logits / T) is calibrated."""
    rng = np.random.default_rng(0)
    calibrated = rng.normal(0.0, 2.0, size=(20000, 2))
    labels = (rng.random(20000) < expit(calibrated[:, 1] - calibrated[:, 0])).astype(int)
    assert fit_temperature(calibrated * true_temperature, labels) == pytest.approx(true_temperature, rel=0.05)


@pytest.fixture
def checkpoint_and_folder(synth_root, tmp_path):
    """An (untrained) checkpoint and a bare labelled folder: the train images of the synthetic set."""
    config = load_config(None, ["model.name=resnet18", "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}"])
    checkpoint = save_checkpoint(tmp_path / "model.pt", create_model(config.model, image_size=40),
                                 checkpoint_metadata(config, 40))
    folder = tmp_path / "site"
    for class_name in ("NORMAL", "PNEUMONIA"):
        shutil.copytree(synth_root / "train" / class_name, folder / class_name)
    return checkpoint, folder


def test_calibrate_writes_a_checkpoint_whose_temperature_applies_everywhere(checkpoint_and_folder, tmp_path):
    checkpoint, folder = checkpoint_and_folder
    out = tmp_path / "calibrated.pt"
    result = runner.invoke(app, ["calibrate", str(checkpoint), "--data", str(folder), "--out", str(out),
                                 "--policy", "min_sensitivity", "--min-sensitivity", "0.9"])
    assert result.exit_code == 0, result.output
    metadata = load_checkpoint(out)["metadata"]
    files = sorted(folder.rglob("*.jpeg"))
    calibration, point = metadata["calibration"], metadata["operating_point"]
    assert calibration["count"] == len(files) and calibration["data"] == str(folder)
    assert calibration["nll_after"] <= calibration["nll_before"]
    assert point["policy"] == "min_sensitivity" and point["metrics_at_threshold"]["sensitivity"] >= 0.9
    temperature = calibration["temperature"]
    assert temperature > 0 and abs(temperature - 1.0) > 1e-3
    assert "calibration" not in load_checkpoint(checkpoint)["metadata"]  # the original is left alone

    raw = np.array([r.prob_pneumonia for r in predict_files(checkpoint, files)])
    expected = expit(logit(raw) / temperature)  # two classes: softmax(z / T)[1] = sigmoid((z1 - z0) / T)
    assert [r.prob_pneumonia for r in predict_files(out, files)] == pytest.approx(expected, abs=1e-5)
    onnx_path = export_onnx(out, tmp_path / "calibrated.onnx").path
    assert [r.prob_pneumonia for r in predict_files(onnx_path, files)] == pytest.approx(expected, abs=1e-4)
    report = evaluate_checkpoint(out, folder, out_dir=tmp_path / "eval", n_bootstrap=10, progress=False,
                                 allow_calibration_images=True)
    assert report.temperature == temperature and report.at_operating_point.threshold == point["threshold"]

    again = runner.invoke(app, ["calibrate", str(out), "--data", str(folder), "--out", str(out)])
    assert again.exit_code == 2 and "new checkpoint" in again.output


def test_calibrate_and_evaluate_reports_on_other_patients(checkpoint_and_folder, tmp_path):
    checkpoint, folder = checkpoint_and_folder
    out = tmp_path / "honest"
    result = runner.invoke(app, ["calibrate-and-evaluate", str(checkpoint), "--data", str(folder), "--out", str(out),
                                 "--bootstrap", "10", "--seed", "1"])
    assert result.exit_code == 0, result.output
    split = json.loads((out / "split.json").read_text())
    calibration, held_out = split["calibration"], split["held_out"]
    assert sorted(calibration + held_out) == sorted(str(p) for p in folder.rglob("*.jpeg"))
    assert not {patient_id(f) for f in calibration} & {patient_id(f) for f in held_out}
    assert load_checkpoint(out / "calibrated.pt")["metadata"]["calibration"]["count"] == len(calibration)
    saved = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert saved["count"] == len(held_out) and "held-out part" in saved["data"]
    assert saved["at_operating_point"] is not None


def test_calibrate_defaults_to_the_val_split_not_the_reported_test_split(checkpoint_and_folder, synth_root, tmp_path):
    checkpoint, _ = checkpoint_and_folder
    out = tmp_path / "calibrated.pt"
    result = runner.invoke(app, ["calibrate", str(checkpoint), "--data", str(synth_root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    calibration = load_checkpoint(out)["metadata"]["calibration"]
    assert calibration["data"].endswith(":val")
    evaluate_checkpoint(out, synth_root, "test", out_dir=tmp_path / "eval", n_bootstrap=5, progress=False)


def test_evaluate_refuses_the_images_that_calibrated_the_model_unless_allowed(checkpoint_and_folder, tmp_path):
    from cxrdistill.evaluation.evaluate import CalibrationImagesError

    checkpoint, folder = checkpoint_and_folder
    out = tmp_path / "calibrated.pt"
    assert runner.invoke(app, ["calibrate", str(checkpoint), "--data", str(folder), "--out", str(out)]).exit_code == 0
    images = load_checkpoint(out)["metadata"]["calibration"]["images"]
    assert images["folder"] == "site" and images["count"] == len(list(folder.rglob("*.jpeg")))
    assert str(tmp_path) not in json.dumps(images) and len(images["digest"]) >= 16

    with pytest.raises(CalibrationImagesError, match="--allow-calibration-images"):
        evaluate_checkpoint(out, folder, out_dir=tmp_path / "eval", n_bootstrap=5, progress=False)
    refused = runner.invoke(app, ["evaluate", str(out), "--data", str(folder), "--bootstrap", "5"])
    assert refused.exit_code == 2 and "calibrated" in refused.output

    report = evaluate_checkpoint(out, folder, out_dir=tmp_path / "eval", n_bootstrap=5, progress=False,
                                 allow_calibration_images=True)
    assert report.calibration_images and "CALIBRATION IMAGES" in report.data
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["calibration_images"] is True

"""Site adaptation without labels: the EM prior estimate, AdaBN, and an adapted checkpoint everywhere it is used."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from scipy.special import expit, logit
from typer.testing import CliRunner

from cxrdistill.cli import app
from cxrdistill.config import load_config
from cxrdistill.deployment.export import export_onnx
from cxrdistill.deployment.predict import predict_files
from cxrdistill.deployment.service import create_app
from cxrdistill.errors import InvalidArgumentError
from cxrdistill.evaluation.adaptation import adapt_checkpoint, estimate_prior_em
from cxrdistill.evaluation.evaluate import evaluate_checkpoint
from cxrdistill.evaluation.operating_point import threshold_in_use
from cxrdistill.models import create_model
from cxrdistill.registry import UnknownNameError
from cxrdistill.runtime.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint

runner = CliRunner()


@pytest.mark.parametrize(("model_prior", "site_prior"), [(0.5, 0.2), (0.5, 0.8), (0.3, 0.6)])
def test_em_recovers_a_known_prior_from_a_calibrated_models_outputs(model_prior, site_prior):
    """Scores z | y ~ N(+-1, 1): the posterior under ``model_prior`` is sigmoid(2 z + log-odds of it), exactly."""
    rng = np.random.default_rng(0)
    labels = rng.random(20000) < site_prior
    z = rng.normal(np.where(labels, 1.0, -1.0), 1.0)
    prob = expit(2.0 * z + logit(model_prior))
    estimate = estimate_prior_em(prob, model_prior)
    assert estimate.converged
    assert estimate.site_prior == pytest.approx(labels.mean(), abs=0.015)
    assert abs(prob.mean() - site_prior) > 0.05  # the naive mean of the probabilities is biased


def test_em_refuses_what_is_not_probabilities():
    with pytest.raises(InvalidArgumentError, match="probabilities"):
        estimate_prior_em(np.array([0.2, 1.5]), 0.5)
    with pytest.raises(InvalidArgumentError, match="model prior"):
        estimate_prior_em(np.array([0.2, 0.5]), 1.0)


def _checkpoint(tmp_path, name: str, size: int = 40):
    config = load_config(None, [f"model.name={name}", "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}"])
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / f"{name}.safetensors", create_model(config.model, image_size=size),
                           checkpoint_metadata(config, size))


@pytest.fixture
def site(synth_root, tmp_path):
    folder = tmp_path / "site"
    for class_name in ("NORMAL", "PNEUMONIA"):
        shutil.copytree(synth_root / "train" / class_name, folder / class_name)
    return folder


def test_adabn_changes_only_batchnorm_statistics(tmp_path, site):
    checkpoint = _checkpoint(tmp_path, "resnet18")
    result = adapt_checkpoint(checkpoint, site, tmp_path / "adapted.safetensors", prior=False)
    before, after = load_checkpoint(checkpoint)["model_state"], load_checkpoint(result.checkpoint)["model_state"]
    statistics = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert statistics and result.adaptation["batchnorm_layers"] == 20 and result.adaptation["adapted"] == ["batchnorm"]
    assert all(not torch.equal(before[k], after[k]) for k in statistics if not k.endswith("num_batches_tracked"))
    assert all(torch.equal(before[k], after[k]) for k in before if k not in statistics)
    record = load_checkpoint(result.checkpoint)["metadata"]["adaptation"]
    assert record["images"] == len(list(site.rglob("*.jpeg"))) and len(record["files_sha256"]) == 64
    assert str(tmp_path) not in str(record)


def test_a_network_without_batchnorm_is_skipped_and_says_so(tmp_path, site):
    checkpoint = _checkpoint(tmp_path, "alexnet", size=64)
    result = adapt_checkpoint(checkpoint, site, tmp_path / "adapted.safetensors")
    assert result.adaptation["batchnorm_layers"] == 0 and "no BatchNorm" in result.adaptation["batchnorm"]
    before, after = load_checkpoint(checkpoint)["model_state"], load_checkpoint(result.checkpoint)["model_state"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_adapted_checkpoint_round_trips_through_evaluate_predict_serve_and_export(tmp_path, site):
    checkpoint = _checkpoint(tmp_path, "resnet18")
    out = tmp_path / "adapted.safetensors"
    result = runner.invoke(app, ["adapt", str(checkpoint), "--images", str(site), "--out", str(out),
                                 "--no-batchnorm"])
    assert result.exit_code == 0, result.output
    metadata = load_checkpoint(out)["metadata"]
    shift = metadata["prior_shift"]
    assert shift["model_prior"] == 0.5 and 0.0 < shift["site_prior"] < 1.0 and shift["site_prior"] != 0.5
    in_use = threshold_in_use(metadata)
    assert in_use.threshold == 0.5 and "site images" in in_use.rule

    files = sorted(site.rglob("*.jpeg"))
    raw = np.array([r.prob_pneumonia for r in predict_files(checkpoint, files)])
    odds_shift = logit(shift["site_prior"]) - logit(0.5)
    expected = expit(logit(raw) + odds_shift)  # Bayes' rule on the odds
    adapted = predict_files(out, files)
    assert [r.prob_pneumonia for r in adapted] == pytest.approx(expected, abs=1e-5)
    assert all(r.threshold == 0.5 for r in adapted)

    report = evaluate_checkpoint(out, site, out_dir=tmp_path / "eval", n_bootstrap=10, progress=False)
    assert report.at_operating_point.threshold == 0.5 and "site images" in report.at_operating_point.rule

    answer = TestClient(create_app(out)).post("/predict", files={"file": ("x.jpeg", files[0].read_bytes())}).json()
    assert answer["probability"] == pytest.approx(expected[0], abs=1e-5) and "site images" in answer["threshold_rule"]

    onnx_path = export_onnx(out, tmp_path / "adapted.onnx").path
    assert [r.prob_pneumonia for r in predict_files(onnx_path, files)] == pytest.approx(expected, abs=1e-4)
    assert "site's estimated share" in (tmp_path / "MODEL_CARD.md").read_text()

    again = runner.invoke(app, ["adapt", str(out), "--images", str(site), "--out", str(tmp_path / "twice")])
    assert again.exit_code == 2 and "already fitted" in again.output


def _point(chosen_on: str, threshold: float) -> dict:
    return {"operating_point": {"threshold": threshold, "policy": "youden", "chosen_on": chosen_on, "count": 9}}


def test_the_default_threshold_is_one_fitted_at_the_site_else_half():
    on_val = _point("val", 0.12)
    default = threshold_in_use(on_val)
    assert default.threshold == 0.5 and "did not transfer" in default.reason
    assert threshold_in_use(on_val, "stored").threshold == 0.12
    assert threshold_in_use(_point("local calibration data", 0.3)).threshold == 0.3
    assert threshold_in_use({}).threshold == 0.5 and threshold_in_use(on_val, "0.5").threshold == 0.5
    assert threshold_in_use(on_val, threshold=0.7).threshold == 0.7
    with pytest.raises(InvalidArgumentError, match="no operating point"):
        threshold_in_use({}, "stored")
    with pytest.raises(UnknownNameError, match="default"):
        threshold_in_use(on_val, "youden")

"""INT8 export (ONNX Runtime static quantisation) of a tiny trained AlexNet: smaller file, QDQ graph, same
metadata, outputs within a stated bound of the fp32 model's, and ``predict`` working on it unchanged.

One export through the command line serves every test (AlexNet's 228 MB fp32 file makes each export cost
seconds); AlexNet is used because its large fully connected layers are what INT8 must shrink.
"""

import json
import os
from pathlib import Path

import onnx
import pytest
from conftest import tiny_config
from typer.testing import CliRunner

from cxrdistill.cli import app
from cxrdistill.deployment.predict import predict_files
from cxrdistill.deployment.quantize import (
    QuantizationSettings,
    calibration_files,
    export_int8,
    int8_agreement,
    int8_path,
)
from cxrdistill.errors import InvalidArgumentError
from cxrdistill.evaluation.operating_point import stored_threshold
from cxrdistill.experiments.run import run_experiment
from cxrdistill.runtime.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # every test here trains a model

PROBABILITY_BOUND = 0.05
"""Largest |p_int8 - p_fp32| accepted per image (observed: below 1e-3 on this model)."""
CALIBRATION_IMAGES = 16


@pytest.fixture(scope="module")
def exported(synth_root, tmp_path_factory):
    """A 1-epoch AlexNet at 64 px (with its operating point), exported to fp32 and int8 by the CLI."""
    workdir = tmp_path_factory.mktemp("int8")
    config = tiny_config(synth_root, workdir, "model.name=alexnet", "data.image_size=64", "train.epochs=1")
    checkpoint = run_experiment(config, progress=False).final_checkpoint
    external = workdir / "external"
    os.symlink(synth_root / "test", external)  # a bare NORMAL/ + PNEUMONIA/ folder with its own name
    out = workdir / "student.onnx"
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(out), "--int8",
                                      "--calibration-images", str(CALIBRATION_IMAGES), "--external", str(external)])
    assert result.exit_code == 0, result.output
    return checkpoint, out, int8_path(out), external, result.output


def test_int8_file_is_a_quarter_of_fp32_with_qdq_nodes_and_the_same_metadata(exported):
    checkpoint, fp32, int8, _, output = exported
    assert int8.name == "student.int8.onnx" and int8.is_file()
    assert int8.stat().st_size < fp32.stat().st_size / 3  # int8 weights; the fp32 file is 228 MB
    graph = onnx.load(str(int8))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    fp32_meta = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
    int8_meta = {p.key: p.value for p in graph.metadata_props}
    assert {k: int8_meta[k] for k in fp32_meta} == fp32_meta
    quantization = json.loads(int8_meta["quantization"])
    assert quantization["per_channel"] and quantization["quant_format"] == "qdq"
    assert quantization["calibration_images"] == CALIBRATION_IMAGES
    assert json.loads(fp32_meta["operating_point"]) == load_checkpoint(checkpoint)["metadata"]["operating_point"]
    assert "fp32 vs int8" in output and "external" in output


def test_int8_outputs_agree_with_fp32_on_validation_and_external_images(exported):
    checkpoint, fp32, int8, external, _ = exported
    agreements = int8_agreement(checkpoint, fp32, int8, external=[external])
    threshold = stored_threshold(load_checkpoint(checkpoint)["metadata"])
    expected = sorted((name, round(t, 6)) for name in ("val", "external") for t in {0.5, threshold})
    assert sorted((a.name, round(a.threshold, 6)) for a in agreements) == expected
    for agreement in agreements:
        assert agreement.count > 0 and agreement.max_abs_prob_difference <= PROBABILITY_BOUND
        assert set(agreement.fp32) == set(agreement.int8) and 0 <= agreement.agreement <= 1


def test_predict_runs_the_int8_file_at_the_stored_threshold(exported, synth_root):
    checkpoint, fp32, int8, _, _ = exported
    files = sorted((synth_root / "test").rglob("*.jpeg"))[:6]
    quantised = predict_files(int8, files, operating_point="stored")
    reference = predict_files(fp32, files, operating_point="stored")
    threshold = stored_threshold(load_checkpoint(checkpoint)["metadata"])
    for q, r in zip(quantised, reference, strict=True):
        assert q.threshold == pytest.approx(threshold) and q.error is None
        assert abs(q.prob_pneumonia - r.prob_pneumonia) <= PROBABILITY_BOUND
        assert q.predicted == ("PNEUMONIA" if q.prob_pneumonia >= threshold else "NORMAL")


def test_calibration_takes_a_seeded_sample_of_the_training_split(exported, synth_root):
    checkpoint, *_ = exported
    from cxrdistill.config import config_from_dict

    data_config = config_from_dict(load_checkpoint(checkpoint)["metadata"]["config"]).data
    first, again = (calibration_files(synth_root, data_config, 5, seed=0) for _ in range(2))
    assert first == again and len(first) == 5
    assert all("/train/" in str(path) for path in first)


def test_bad_calibration_requests_are_refused_before_any_work(exported, tmp_path):
    checkpoint, *_ = exported
    with pytest.raises(InvalidArgumentError, match="--calibration-data"):
        export_int8(checkpoint, tmp_path / "m.onnx", calibration_data=tmp_path / "missing")
    with pytest.raises(InvalidArgumentError, match="at least 1"):
        export_int8(checkpoint, tmp_path / "m.onnx", calibration_images=0)
    with pytest.raises(InvalidArgumentError, match="quant_format"):
        QuantizationSettings(quant_format="int4")
    assert not list(Path(tmp_path).glob("*.onnx"))

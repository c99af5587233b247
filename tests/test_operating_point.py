"""The operating point: chosen by a policy, stored in the checkpoint, used by predict, evaluate and the ONNX model."""

import csv
import json
import shutil

import numpy as np
import onnx
import pytest

from cxrdistill.config import load_config
from cxrdistill.deployment.export import export_onnx
from cxrdistill.deployment.predict import predict_files
from cxrdistill.evaluation.evaluate import evaluate_checkpoint
from cxrdistill.evaluation.operating_point import choose_threshold
from cxrdistill.models import create_model
from cxrdistill.runtime.checkpoint import checkpoint_metadata, save_checkpoint, update_checkpoint_metadata

LABELS = np.array([0, 0, 0, 1, 1, 1, 1])
PROBS = np.array([0.1, 0.4, 0.6, 0.35, 0.7, 0.8, 0.9])
# ROC points by falling threshold (sensitivity, 1 - specificity): 0.9 (1/4, 0), 0.8 (2/4, 0), 0.7 (3/4, 0),
# 0.6 (3/4, 1/3), 0.4 (3/4, 2/3), 0.35 (1, 2/3), 0.1 (1, 1). Youden's J peaks at 0.7 (J = 0.75).


@pytest.mark.parametrize(("policy", "min_sensitivity", "expected"), [
    ("youden", 0.98, 0.7),
    ("min_sensitivity", 0.98, 0.35),  # the only way to catch all four pneumonias
    ("min_sensitivity", 0.7, 0.7),  # 3 of 4 is enough: the highest such threshold
    ("fixed", 0.98, 0.3),
])
def test_threshold_policies(policy, min_sensitivity, expected):
    assert choose_threshold(LABELS, PROBS, policy, min_sensitivity, fixed_threshold=0.3) == pytest.approx(expected)


def test_threshold_policy_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown threshold policy 'best'"):
        choose_threshold(LABELS, PROBS, "best")
    with pytest.raises(ValueError, match="needs NORMAL and PNEUMONIA"):
        choose_threshold(np.ones(3, dtype=int), PROBS[:3], "youden")


@pytest.fixture
def model_and_images(synth_root, tmp_path):
    """An (untrained) checkpoint and a bare external folder of six images, three per class."""
    config = load_config(None, ["model.name=resnet18", "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}"])
    checkpoint = save_checkpoint(tmp_path / "model.pt", create_model(config.model, image_size=40),
                                 checkpoint_metadata(config, 40))
    folder = tmp_path / "site"
    for class_name in ("NORMAL", "PNEUMONIA"):
        (folder / class_name).mkdir(parents=True)
        for image in sorted((synth_root / "test" / class_name).glob("*.jpeg"))[:3]:
            shutil.copy(image, folder / class_name)
    return checkpoint, sorted(folder.rglob("*.jpeg"))


def test_the_stored_threshold_is_used_by_predict_evaluate_and_onnx(model_and_images, tmp_path):
    checkpoint, files = model_and_images
    probs = np.array([r.prob_pneumonia for r in predict_files(checkpoint, files)])
    ordered = np.sort(probs)
    widest = int(np.argmax(np.diff(ordered)))
    threshold = float((ordered[widest] + ordered[widest + 1]) / 2)  # between two images, robust to float noise
    expected = ["PNEUMONIA" if p >= threshold else "NORMAL" for p in probs]
    assert set(expected) == {"NORMAL", "PNEUMONIA"}
    update_checkpoint_metadata(checkpoint, {"operating_point": {"threshold": threshold, "policy": "fixed",
                                                                "chosen_on": "test"}})

    assert {r.threshold for r in predict_files(checkpoint, files)} == {0.5}  # chosen on an internal split
    stored = predict_files(checkpoint, files, operating_point="stored")
    assert [r.predicted for r in stored] == expected and stored[0].threshold == threshold
    assert {r.predicted for r in predict_files(checkpoint, files, threshold=0.0)} == {"PNEUMONIA"}  # override

    onnx_path = export_onnx(checkpoint, tmp_path / "model.onnx").path
    props = {p.key: json.loads(p.value) for p in onnx.load(onnx_path).metadata_props}
    assert props["operating_point"]["threshold"] == threshold and props["calibration"] is None
    assert [r.predicted for r in predict_files(onnx_path, files, operating_point="stored")] == expected

    report = evaluate_checkpoint(checkpoint, files[0].parent.parent, out_dir=tmp_path / "eval", n_bootstrap=10,
                                 progress=False)
    point = report.at_operating_point
    assert point.threshold == threshold and point.rule == "fixed on test"
    labels = np.array([1 if f.parent.name == "PNEUMONIA" else 0 for f in files])
    decided = np.array([e == "PNEUMONIA" for e in expected])
    assert point.confusion == [[int(np.sum((labels == t) & (decided == p))) for p in (0, 1)] for t in (0, 1)]
    with open(tmp_path / "eval" / "predictions.csv") as stream:
        rows = {row["path"]: row["predicted_at_operating_point"] for row in csv.DictReader(stream)}
    assert [rows[str(f)] for f in files] == expected
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["at_operating_point"]["threshold"] == threshold and saved["metrics"]["accuracy"]["value"] >= 0

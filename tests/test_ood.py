"""The out-of-distribution check: fitted on a run's train split, stored beside the checkpoint, reported by predict."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrdistill.data.layout import scan_dataset
from cxrdistill.deployment.ood import FLAG_TEXT, OOD_KEY, fit_ood, load_ood
from cxrdistill.deployment.predict import PREDICTION_COLUMNS, predict_files, write_predictions_csv
from cxrdistill.registry import UnknownNameError
from cxrdistill.runtime.checkpoint import CheckpointError, read_metadata, side_file_path, update_checkpoint_metadata
from cxrdistill.runtime.served import load_served_model


def shifted_images(folder: Path) -> list[Path]:
    """Inputs unlike any chest film: uniform noise, flat black, flat white, a checkerboard."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pictures = {"noise": rng.integers(0, 256, (72, 64), dtype=np.uint8),
                "black": np.zeros((72, 64), np.uint8), "white": np.full((72, 64), 255, np.uint8),
                "checks": (np.indices((72, 64)).sum(axis=0) // 8 % 2 * 255).astype(np.uint8)}
    paths = []
    for name, pixels in pictures.items():
        paths.append(folder / f"{name}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def chest_images(synth_root: Path) -> list[Path]:
    return [record.path for record in scan_dataset(synth_root)["test"]]


def test_shifted_inputs_score_higher_than_training_like_ones(ood_checkpoint: Path, synth_root: Path,
                                                             tmp_path: Path) -> None:
    chest = predict_files(ood_checkpoint, chest_images(synth_root))
    shifted = predict_files(ood_checkpoint, shifted_images(tmp_path))
    chest_scores = [r.ood_score for r in chest]
    assert max(chest_scores) < min(r.ood_score for r in shifted), (chest_scores, [r.ood_score for r in shifted])
    assert all(r.ood_flag for r in shifted)  # (a threshold set on this tiny val split says little about chests)
    assert all(r.predicted in ("NORMAL", "PNEUMONIA") for r in shifted)  # still classified, and marked
    assert all(r.shown_label == f"{r.predicted} ({FLAG_TEXT})" for r in shifted)


def test_fitted_statistics_round_trip_through_the_sidecar(ood_checkpoint: Path) -> None:
    metadata = read_metadata(ood_checkpoint)
    record, side = metadata[OOD_KEY], metadata["side_files"][OOD_KEY]
    assert record["score"] == "mahalanobis" and record["features"] == "pooled_stats" and record["layer"] == "layer4"
    assert record["fitted_on"]["data"].endswith(":train") and record["threshold_on"]["data"].endswith(":val")
    assert record["percentile"] == 99.0 and record["threshold"] > 0
    stored = side_file_path(ood_checkpoint, OOD_KEY)
    assert side["file"] == stored.name and len(side["sha256"]) == 64
    served, _ = load_served_model(ood_checkpoint)
    scorer = load_ood(ood_checkpoint, served, metadata).score
    assert scorer.components.dtype == torch.float32 and scorer.components.shape[1] == 1024  # mean and spread of layer4
    assert scorer.class_means.shape == (2, scorer.components.shape[0])
    assert json.loads(ood_checkpoint.with_suffix(".json").read_text())["metadata"][OOD_KEY] == record  # plain JSON


def test_a_changed_statistics_file_is_refused(ood_checkpoint: Path, tmp_path: Path) -> None:
    copy = tmp_path / "student.safetensors"
    for source in (ood_checkpoint, ood_checkpoint.with_suffix(".json"), side_file_path(ood_checkpoint, OOD_KEY)):
        shutil.copy(source, tmp_path / source.name)
    data = bytearray(side_file_path(copy, OOD_KEY).read_bytes())
    data[-1] ^= 1
    side_file_path(copy, OOD_KEY).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checkpoint's record"):
        predict_files(copy, [])


def test_a_new_checkpoint_written_from_a_fitted_one_carries_its_own_statistics(ood_checkpoint: Path,
                                                                               tmp_path: Path) -> None:
    out = update_checkpoint_metadata(ood_checkpoint, {"note": "copied"}, tmp_path / "copy.safetensors")
    side = read_metadata(out)["side_files"][OOD_KEY]
    assert side["file"] == "copy.ood.safetensors" and side_file_path(out, OOD_KEY).is_file()
    original = predict_files(ood_checkpoint, shifted_images(tmp_path / "images"))
    copied = predict_files(out, shifted_images(tmp_path / "images"))
    assert [r.ood_score for r in copied] == [r.ood_score for r in original]


def test_predict_writes_the_score_and_the_flag(ood_checkpoint: Path, small_checkpoint: Path, tmp_path: Path) -> None:
    files = shifted_images(tmp_path / "images")
    out = write_predictions_csv(predict_files(ood_checkpoint, files), tmp_path / "preds.csv")
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == PREDICTION_COLUMNS and {"ood_score", "ood_flag"} <= set(PREDICTION_COLUMNS)
    assert all(float(row["ood_score"]) > 0 and row["ood_flag"] == FLAG_TEXT for row in rows)
    unfitted = write_predictions_csv(predict_files(small_checkpoint, files[:1]), tmp_path / "plain.csv")
    row = next(csv.DictReader(unfitted.open()))
    assert row["ood_score"] == "" and row["ood_flag"] == ""  # no check fitted: nothing claimed


def test_energy_score_needs_no_statistics_file(ood_checkpoint: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copy(ood_checkpoint, tmp_path / "energy.safetensors"))
    shutil.copy(ood_checkpoint.with_suffix(".json"), copy.with_suffix(".json"))
    record = fit_ood(copy, score="energy", percentile=95).record
    assert OOD_KEY not in read_metadata(copy)["side_files"] and record["threshold_rule"].startswith("95th")
    result = predict_files(copy, shifted_images(tmp_path / "images"))
    assert all(isinstance(r.ood_score, float) and r.ood_flag is not None for r in result)


def test_bad_settings_are_refused_before_any_work(ood_checkpoint: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown out-of-distribution score 'knn'"):
        fit_ood(ood_checkpoint, score="knn")
    with pytest.raises(UnknownNameError, match="unknown feature source"):
        fit_ood(ood_checkpoint, features="logits")
    with pytest.raises(ValueError, match="percentile must be between 0 and 100"):
        fit_ood(ood_checkpoint, percentile=100)


def test_onnx_export_outputs_the_score_and_flags_the_same_images(ood_checkpoint: Path, synth_root: Path,
                                                                 tmp_path: Path) -> None:
    import onnx

    from cxrdistill.deployment.export import export_onnx

    exported = export_onnx(ood_checkpoint, tmp_path / "student.onnx").path
    graph = onnx.load(exported)
    assert [output.name for output in graph.graph.output] == ["logits", "ood_score"]
    metadata = {p.key: json.loads(p.value) for p in graph.metadata_props}
    assert metadata[OOD_KEY]["threshold"] == read_metadata(ood_checkpoint)[OOD_KEY]["threshold"]
    files = [*chest_images(synth_root), *shifted_images(tmp_path / "images")]
    from_torch, from_onnx = predict_files(ood_checkpoint, files), predict_files(exported, files, batch_size=3)
    assert [r.ood_flag for r in from_onnx] == [r.ood_flag for r in from_torch]
    assert any(r.ood_flag for r in from_onnx) and not all(r.ood_flag for r in from_onnx)
    for a, b in zip(from_torch, from_onnx, strict=True):
        assert b.ood_score == pytest.approx(a.ood_score, rel=1e-4)


def test_service_answers_with_the_check(ood_checkpoint: Path, tmp_path: Path) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi", reason="the service is the optional 'serve' extra")
    from service_server import serving

    from cxrdistill.deployment.service import create_app

    noise = shifted_images(tmp_path)[0]
    offline = predict_files(ood_checkpoint, [noise])[0]
    with serving(create_app(ood_checkpoint)) as url:
        answer = httpx.post(f"{url}/predict", files={"file": ("x.png", noise.read_bytes())}, timeout=60).json()
        health = httpx.get(f"{url}/health").json()
    threshold = read_metadata(ood_checkpoint)[OOD_KEY]["threshold"]
    assert answer["label"] == offline.predicted and health["ood_threshold"] == threshold
    assert answer["ood"] == {"score": pytest.approx(offline.ood_score, rel=1e-5), "threshold": threshold,
                             "flagged": True, "message": FLAG_TEXT}


def test_training_fits_the_check_on_the_checkpoint_it_hands_on(synth_root: Path, tmp_path: Path) -> None:
    from conftest import tiny_config

    from cxrdistill.experiments.run import run_experiment

    result = run_experiment(tiny_config(synth_root, tmp_path, "train.epochs=1"), progress=False)
    record = read_metadata(result.final_checkpoint)[OOD_KEY]
    assert record["fitted_on"]["count"] == len(result.bundle.split["train"]) and record["fit_seconds"] >= 0
    assert side_file_path(result.final_checkpoint, OOD_KEY).is_file()

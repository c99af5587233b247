"""`cxrdistill predict` over folders: mixed formats, a CSV with errors, heat maps, and the ONNX rule for them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from image_files import write_dicom
from PIL import Image
from typer.testing import CliRunner

from cxrdistill.cli import app
from cxrdistill.deployment.predict import PREDICTION_COLUMNS

runner = CliRunner()


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """8- and 16-bit PNG, JPEG, 8/16-bit DICOM (one without suffix) and four unreadable files, in two folders."""
    rng = np.random.default_rng(0)
    root = tmp_path / "films"
    (root / "ward").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (72, 60), dtype=np.uint8)).save(root / "grey8.png")
    Image.fromarray(rng.integers(0, 65536, (60, 72), dtype=np.uint16)).save(root / "grey16.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "ward" / "colour.jpeg")
    write_dicom(root / "ward" / "grey8.dcm", rng.integers(0, 256, (50, 40), dtype=np.uint8))
    write_dicom(root / "ward" / "IM0002", rng.integers(0, 4096, (40, 50)).astype(np.uint16), bits_stored=12,
                window=(2048, 2048))
    (root / "notes.png").write_text("not an image")
    (root / "cut.jpeg").write_bytes((root / "ward" / "colour.jpeg").read_bytes()[:300])
    write_dicom(root / "ward" / "report.dcm", np.zeros((8, 8), np.uint16), pixel_data=False)
    write_dicom(root / "ward" / "cine.dcm", np.zeros((2, 8, 8), np.uint16))
    (root / "README.txt").write_text("neither an image suffix nor a DICOM marker: not listed")
    return root


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames) == PREDICTION_COLUMNS
        return {Path(row["file"]).name: row for row in reader}


def test_folder_to_csv_with_heat_maps_lists_unreadable_files_and_goes_on(small_checkpoint: Path, mixed_folder: Path,
                                                                        tmp_path: Path) -> None:
    out, maps = tmp_path / "preds.csv", tmp_path / "maps"
    result = runner.invoke(app, ["predict", str(small_checkpoint), str(mixed_folder), "--out", str(out),
                                 "--heatmap", str(maps), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    readable = {"grey8.png", "grey16.png", "colour.jpeg", "grey8.dcm", "IM0002"}
    unreadable = {"notes.png": "not an image file", "cut.jpeg": "truncated", "report.dcm": "no pixel data",
                  "cine.dcm": "multi-frame"}
    assert set(rows) == readable | set(unreadable)
    for name in readable:
        row = rows[name]
        probability, threshold = float(row["probability"]), float(row["threshold"])
        assert 0 <= probability <= 1 and row["error"] == ""
        assert row["label"] == ("PNEUMONIA" if probability >= threshold else "NORMAL")
        overlay = Image.open(row["heatmap"])
        assert Path(row["heatmap"]).parent == maps and overlay.mode == "RGB"
    assert rows["grey8.png"]["heatmap"] != rows["grey8.dcm"]["heatmap"]  # same stem, two files
    assert Image.open(rows["grey8.png"]["heatmap"]).size == (60, 72)  # the film's own aspect
    for name, reason in unreadable.items():
        assert reason in rows[name]["error"] and rows[name]["probability"] == rows[name]["heatmap"] == ""
    summary = " ".join(result.output.split())
    assert "9 files: 5 classified" in summary and "4 unreadable and skipped" in summary
    assert "cine.dcm" in summary


def test_list_of_files_still_prints_a_table(small_checkpoint: Path, mixed_folder: Path) -> None:
    result = runner.invoke(app, ["predict", str(small_checkpoint), str(mixed_folder / "grey8.png"),
                                 str(mixed_folder / "notes.png")], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "grey8.png" in result.output and "unreadable" in result.output


def test_onnx_heat_maps_need_the_checkpoint(small_onnx: Path, small_checkpoint: Path, mixed_folder: Path,
                                            tmp_path: Path) -> None:
    image = str(mixed_folder / "grey8.png")
    refused = runner.invoke(app, ["predict", str(small_onnx), image, "--heatmap", str(tmp_path / "maps")])
    assert refused.exit_code == 2 and "--checkpoint" in " ".join(refused.output.split())
    assert not (tmp_path / "maps").exists()
    out = tmp_path / "preds.csv"
    result = runner.invoke(app, ["predict", str(small_onnx), image, "--heatmap", str(tmp_path / "maps"),
                                 "--checkpoint", str(small_checkpoint), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert Path(_rows(out)["grey8.png"]["heatmap"]).is_file()


def test_empty_folder_is_a_clear_error(small_checkpoint: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(small_checkpoint), str(tmp_path)])
    assert result.exit_code == 2 and "no image files" in result.output

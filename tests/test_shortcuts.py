"""The shortcut audit (cxrdistill.data.shortcuts): a cue planted in one class is found, a cue-free set is not."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cxrdistill.cli import app
from cxrdistill.data.audit import audit_dataset
from cxrdistill.data.layout import CLASS_NAMES, DatasetLayoutError
from cxrdistill.data.shortcut_outputs import (
    GROUP_AUC_FILE,
    MEAN_IMAGES_FILE,
    SHORTCUT_AUDIT_FILE,
    SHORTCUT_TABLE_FILE,
)
from cxrdistill.data.shortcuts import SHORTCUT_WARNING_AUC, jpeg_quality
from cxrdistill.errors import InvalidArgumentError

SIDE = 64
PATIENTS = 30
"""Per class, one film each: enough for five patient-grouped folds, small enough to write in a moment."""


def film(rng: np.random.Generator) -> np.ndarray:
    """A smooth random grey picture (no cue of either class): blurred noise around a random exposure."""
    noise = rng.normal(0, 1, (SIDE // 8, SIDE // 8))
    picture = np.asarray(Image.fromarray(noise.astype(np.float32)).resize((SIDE, SIDE), Image.Resampling.BICUBIC))
    return np.clip(rng.uniform(90, 150) + 25 * picture, 0, 255).astype(np.uint8)


def corner_mark(pixels: np.ndarray) -> np.ndarray:
    """A burnt-in white marker in the top-left corner, as a side letter would be."""
    marked = pixels.copy()
    marked[3:10, 3:10] = 255
    return marked


def black_border(pixels: np.ndarray) -> np.ndarray:
    """Black padding on the left and right, as a film scanned into a wider frame."""
    framed = pixels.copy()
    framed[:, :6] = 0
    framed[:, -6:] = 0
    return framed


def write_folder(root: Path, seed: int, cue=None) -> Path:
    """``root/{NORMAL,PNEUMONIA}`` of Kermany-named JPEGs; ``cue`` (if any) is applied to PNEUMONIA only."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASS_NAMES):
        (root / name).mkdir(parents=True)
        for patient in range(PATIENTS):
            pixels = film(rng)
            if cue is not None and label == 1:
                pixels = cue(pixels)
            file = f"person{patient}_virus_{patient}.jpeg" if label else f"IM-{patient:04d}-0001.jpeg"
            Image.fromarray(pixels).save(root / name / file, quality=90)
    return root


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("marked") / "marked", seed=1, cue=corner_mark)


@pytest.fixture(scope="module")
def marked_report(marked: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    external = write_folder(tmp_path_factory.mktemp("ext") / "later", seed=2, cue=corner_mark)
    return audit_dataset(marked, progress=False, external=[external]).shortcuts


def best(aucs: dict[str, float]) -> float:
    return max(aucs.values())


def test_a_corner_mark_in_one_class_is_found_by_the_corner_features(marked_report: dict) -> None:
    aucs = marked_report["folders"][""]["auc"]
    assert best(aucs["corners"]) > 0.95
    assert best(aucs["all"]) > 0.9
    assert best(aucs["geometry"]) == 0.5  # every image is 64 x 64: no size cue
    assert any(line.startswith("(all) (cross-validated): corners") for line in marked_report["warnings"])
    assert marked_report["single_features"][0]["feature"] == "top_left_bright"
    assert marked_report["single_features"][0]["higher_in"] == "PNEUMONIA"


def test_the_training_folders_cue_scores_on_an_external_set_that_has_it(marked_report: dict) -> None:
    external = marked_report["external"]["later"]
    assert external["images"] == 2 * PATIENTS
    assert best(external["auc"]["corners"]) > 0.95
    assert any(line.startswith("later (fitted on (all)): corners") for line in marked_report["warnings"])


def test_a_border_in_one_class_is_found_by_the_border_features(tmp_path: Path) -> None:
    aucs = audit_dataset(write_folder(tmp_path / "framed", seed=3, cue=black_border), progress=False
                         ).shortcuts["folders"][""]["auc"]
    assert best(aucs["border"]) > 0.95


def test_the_border_crop_of_a_model_removes_the_border_cue_it_covers(tmp_path: Path) -> None:
    """Audited as a model with ``data.border_crop=0.1`` sees them (6 of 64 columns cut on each side), the
    padded films no longer differ at their edges."""
    folder = write_folder(tmp_path / "framed", seed=3, cue=black_border)
    shortcuts = audit_dataset(folder, progress=False, border_crop=0.1).shortcuts
    assert best(shortcuts["folders"][""]["auc"]["border"]) < 0.7
    assert not any(": border" in line for line in shortcuts["warnings"])


def test_a_cue_free_set_scores_near_chance_and_raises_no_warning(tmp_path: Path) -> None:
    shortcuts = audit_dataset(write_folder(tmp_path / "plain", seed=4), progress=False).shortcuts
    for group, aucs in shortcuts["folders"][""]["auc"].items():
        assert abs(best(aucs) - 0.5) < 0.2, group
    assert best(shortcuts["folders"][""]["auc"]["all"]) < SHORTCUT_WARNING_AUC
    assert shortcuts["warnings"] == []


def test_a_folder_too_small_to_cross_validate_is_skipped_with_the_reason(synth_copy: Path) -> None:
    for extra in sorted((synth_copy / "test" / "NORMAL").iterdir())[1:]:
        extra.unlink()
    shortcuts = audit_dataset(synth_copy, progress=False).shortcuts
    assert shortcuts["folders"]["test"]["skipped"] == "fewer than 2 patients in a class (1)"
    assert "auc" in shortcuts["folders"]["train"]


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_quality_is_read_back_from_the_quantisation_table(quality: int) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(buffer, format="JPEG", quality=quality)
    with Image.open(buffer) as image:
        assert jpeg_quality(image.quantization[0]) == pytest.approx(quality, abs=1.5)


def test_two_external_sets_with_one_name_are_refused(marked: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="both called 'marked'"):
        audit_dataset(marked, progress=False, external=[marked, marked])


def test_an_external_root_without_test_folder_is_refused(marked: Path, synth_copy: Path) -> None:
    shutil.rmtree(synth_copy / "test")
    with pytest.raises(DatasetLayoutError, match="no NORMAL/ and PNEUMONIA/ folders and no test/ folder"):
        audit_dataset(marked, progress=False, external=[synth_copy])


def test_cli_writes_the_table_json_and_figures(marked: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    result = CliRunner().invoke(app, ["data", "audit", str(marked), "--external", str(marked.parent / "marked"),
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert best(printed["shortcuts"]["external"]["marked"]["auc"]["corners"]) > 0.95
    saved = json.loads((out / SHORTCUT_AUDIT_FILE).read_text())
    assert saved["root"] == str(marked) and saved["folders"] == printed["shortcuts"]["folders"]
    assert "| corners |" in (out / SHORTCUT_TABLE_FILE).read_text()
    for figure in (MEAN_IMAGES_FILE, GROUP_AUC_FILE):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_without_shortcuts_skips_the_audit(marked: Path) -> None:
    result = CliRunner().invoke(app, ["data", "audit", str(marked), "--no-shortcuts", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["shortcuts"] is None

"""Tests for the synthetic chest X-ray-like data set (cxrdistill.data.synth)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrdistill.data.synth import CLASSES, COMPLETE_FILE, MARKER_FILE, SynthSpec, make_synthetic_dataset

SMALL = SynthSpec(
    normal_patients=6,
    pneumonia_patients=8,
    images_per_patient=(1, 3),
    image_size=(96, 80),
    test_fraction=0.3,
    seed=7,
)
NORMAL_NAME = re.compile(r"^IM-(\d{4})-(\d{4})\.jpeg$")
PNEUMONIA_NAME = re.compile(r"^person(\d+)_(bacteria|virus)_(\d+)\.jpeg$")
SmallSet = tuple[Path, dict[str, dict[str, int]]]


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path, to compare whole sets byte for byte."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _images(root: Path) -> list[Path]:
    """All JPEGs of a set, in a stable order."""
    return sorted(root.glob("*/*/*.jpeg"))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> SmallSet:
    """One small set shared by the read-only tests, to keep the suite fast."""
    root = tmp_path_factory.mktemp("synth") / "small"
    return root, make_synthetic_dataset(root, SMALL)


def test_same_spec_gives_identical_bytes(small_set: SmallSet, tmp_path: Path) -> None:
    root, _ = small_set
    again = make_synthetic_dataset(tmp_path / "again", SMALL)
    assert _snapshot(tmp_path / "again") == _snapshot(root)
    assert again == small_set[1]


def test_other_seed_gives_other_images(small_set: SmallSet, tmp_path: Path) -> None:
    root, _ = small_set
    other = tmp_path / "other"
    make_synthetic_dataset(other, replace(SMALL, seed=8))
    ours = {p.read_bytes() for p in _images(root)}
    assert not ours & {p.read_bytes() for p in _images(other)}


def test_counts_match_files_on_disk(small_set: SmallSet) -> None:
    root, counts = small_set
    assert set(counts) == {"train", "test"}
    assert sorted(p.name for p in root.iterdir()) == sorted([MARKER_FILE, COMPLETE_FILE, "train", "test"])
    for split, by_class in counts.items():
        assert set(by_class) == set(CLASSES)
        for label, n in by_class.items():
            assert len(list((root / split / label).glob("*.jpeg"))) == n
            assert n > 0
    assert sum(sum(c.values()) for c in counts.values()) == len(_images(root))


def test_file_names_and_patients(small_set: SmallSet) -> None:
    root, _ = small_set
    low, high = SMALL.images_per_patient
    splits_of: dict[int, set[str]] = {}
    images_of: dict[int, list[int]] = {}
    kinds_of: dict[int, set[str]] = {}
    label_of: dict[int, str] = {}
    for path in _images(root):
        split, label = path.parent.parent.name, path.parent.name
        if label == "NORMAL":
            match = NORMAL_NAME.match(path.name)
            assert match, path.name
            patient, image = int(match.group(1)), int(match.group(2))
        else:
            match = PNEUMONIA_NAME.match(path.name)
            assert match, path.name
            patient, image = int(match.group(1)), int(match.group(3))
            kinds_of.setdefault(patient, set()).add(match.group(2))
        assert label_of.setdefault(patient, label) == label, "patient number reused across classes"
        splits_of.setdefault(patient, set()).add(split)
        images_of.setdefault(patient, []).append(image)

    assert all(len(splits) == 1 for splits in splits_of.values()), "a patient spans train and test"
    assert all(len(kinds) == 1 for kinds in kinds_of.values()), "a patient has bacteria and virus"
    for numbers in images_of.values():
        assert sorted(numbers) == list(range(1, len(numbers) + 1))
        assert low <= len(numbers) <= high
    labels = list(label_of.values())
    assert labels.count("NORMAL") == SMALL.normal_patients
    assert labels.count("PNEUMONIA") == SMALL.pneumonia_patients


def test_images_are_greyscale_jpegs_of_the_spec_size(small_set: SmallSet) -> None:
    root, _ = small_set
    for path in _images(root):
        with Image.open(path) as img:
            assert img.format == "JPEG"
            assert img.mode == "L"
            assert img.size == SMALL.image_size
            assert b"SYNTHETIC" in img.info.get("comment", b"")


def test_marker_labels_the_set_synthetic(small_set: SmallSet) -> None:
    root, _ = small_set
    text = (root / MARKER_FILE).read_text(encoding="utf-8")
    assert "SYNTHETIC DATA" in text
    assert "cxrdistill" in text
    assert "says anything about" in text and "real chest X-rays" in text
    assert f"seed {SMALL.seed}" in text
    assert f"pneumonia_patients: {SMALL.pneumonia_patients}" in text


def test_zero_test_fraction_writes_train_only(tmp_path: Path) -> None:
    spec = SynthSpec(normal_patients=2, pneumonia_patients=2, image_size=(48, 40), test_fraction=0.0)
    counts = make_synthetic_dataset(tmp_path, spec)
    assert set(counts) == {"train"}
    assert not (tmp_path / "test").exists()


def test_refuses_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("real data lives here")
    with pytest.raises(FileExistsError, match="non-empty"):
        make_synthetic_dataset(tmp_path, SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]

    a_file = tmp_path / "notes.txt"
    with pytest.raises(FileExistsError):
        make_synthetic_dataset(a_file, SMALL)


def test_rewrites_own_set_but_not_one_with_another_spec(tmp_path: Path) -> None:
    spec = SynthSpec(normal_patients=2, pneumonia_patients=3, image_size=(48, 40), seed=3)
    first = make_synthetic_dataset(tmp_path, spec)
    before = _snapshot(tmp_path)
    assert make_synthetic_dataset(tmp_path, spec) == first
    assert _snapshot(tmp_path) == before

    with pytest.raises(FileExistsError, match="another spec"):
        make_synthetic_dataset(tmp_path, SynthSpec(normal_patients=2, pneumonia_patients=3, seed=4))
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "changes",
    [
        {"normal_patients": 0},
        {"pneumonia_patients": -1},
        {"images_per_patient": (0, 2)},
        {"images_per_patient": (3, 2)},
        {"image_size": (16, 128)},
        {"test_fraction": 1.0},
        {"test_fraction": -0.1},
        {"seed": -1},
    ],
)
def test_rejects_bad_specs(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SynthSpec(**changes)


def test_spec_accepts_lists_from_config_files() -> None:
    spec = SynthSpec(images_per_patient=[2, 2], image_size=[64, 64])  # type: ignore[arg-type]
    assert spec.images_per_patient == (2, 2)
    assert spec.image_size == (64, 64)
    assert hash(spec) == hash(SynthSpec(images_per_patient=(2, 2), image_size=(64, 64)))


def test_pneumonia_brightens_lungs_but_not_whole_image(tmp_path: Path) -> None:
    width, height = 96, 80
    spec = SynthSpec(
        normal_patients=40, pneumonia_patients=40, image_size=(width, height), test_fraction=0.0, seed=0
    )
    make_synthetic_dataset(tmp_path, spec)
    # Central part of each lung field at its nominal place (u = +-0.38, v = -0.05 in [-1, 1]
    # image coordinates); pose jitter is small enough that this stays inside the lungs.
    u, v = np.meshgrid((np.arange(width) + 0.5) / width * 2 - 1, (np.arange(height) + 0.5) / height * 2 - 1)
    lung_core = ((np.abs(u) - 0.38) / 0.1) ** 2 + ((v + 0.05) / 0.22) ** 2 < 1.0

    whole: dict[str, np.ndarray] = {}
    lungs: dict[str, np.ndarray] = {}
    for label in CLASSES:
        pixels = np.stack(
            [np.asarray(Image.open(p), dtype=np.float64) for p in (tmp_path / "train" / label).glob("*.jpeg")]
        )
        whole[label] = pixels.mean(axis=(1, 2))
        lungs[label] = pixels[:, lung_core].mean(axis=1)

    # Grey levels 0-255. Without opacities these class gaps stay within about +-10 (chance).
    lung_gap = lungs["PNEUMONIA"].mean() - lungs["NORMAL"].mean()
    relative = {label: (lungs[label] - whole[label]).mean() for label in CLASSES}
    relative_gap = relative["PNEUMONIA"] - relative["NORMAL"]
    whole_gap = whole["PNEUMONIA"].mean() - whole["NORMAL"].mean()
    assert lung_gap > 12.0, lung_gap
    assert relative_gap > 10.0, relative_gap
    assert abs(whole_gap) < 8.0, whole_gap

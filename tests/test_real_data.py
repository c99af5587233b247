"""Checks on the real shared 224-px copy of the Kermany training set (skipped where it is not present).

The data is only read: nothing is copied into the repository; the cache and symlinks live in tmp_path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cxrdistill.data.cache import DecodedImageCache
from cxrdistill.data.io import load_for_model, read_grey
from cxrdistill.data.layout import CLASS_NAMES, scan_dataset
from cxrdistill.data.patients import patient_id
from cxrdistill.data.splits import make_split, split_patients

REAL_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chest_xray_224"

pytestmark = pytest.mark.skipif(
    not (REAL_ROOT / "train").is_dir(),
    reason=f"real data not found at {REAL_ROOT} (the shared 224-px Kermany copy); only synthetic data is tested",
)


@pytest.fixture(scope="module")
def train_records():
    found = scan_dataset(REAL_ROOT)
    assert "train" in found
    return found["train"]


def test_class_counts_of_the_training_set(train_records) -> None:
    counts = {name: sum(r.label == i for r in train_records) for i, name in enumerate(CLASS_NAMES)}
    assert counts == {"NORMAL": 1341, "PNEUMONIA": 3875}


def test_every_file_name_parses_to_a_patient(train_records) -> None:
    unparsed = [r.path.name for r in train_records if patient_id(r.path) is None]
    assert unparsed == []
    assert not any(r.patient.startswith("file:") for r in train_records)
    # Pneumonia names never give a NORMAL-style patient and the other way round.
    for record in train_records:
        assert record.patient.startswith("IM-" if record.class_name == "NORMAL" else "person"), record.path.name


def test_patients_have_one_class(train_records) -> None:
    classes: dict[str, set[int]] = {}
    for record in train_records:
        classes.setdefault(record.patient, set()).add(record.label)
    assert all(len(labels) == 1 for labels in classes.values())
    assert len(classes) < len(train_records)  # several films per patient occur


def test_patient_wise_split_of_a_subsample_is_patient_disjoint(train_records) -> None:
    rng = np.random.default_rng(0)
    sample = [train_records[i] for i in sorted(rng.choice(len(train_records), size=1500, replace=False))]
    split = split_patients(sample, {"val": 0.15, "test": 0.15}, seed=0)

    assert sorted(str(r.path) for recs in split.values() for r in recs) == sorted(str(r.path) for r in sample)
    patients = {name: {r.patient for r in recs} for name, recs in split.items()}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    for name in ("val", "test"):
        for label in range(len(CLASS_NAMES)):
            total = sum(r.label == label for r in sample)
            got = sum(r.label == label for r in split[name])
            assert abs(got - 0.15 * total) <= 0.02 * total, (name, label, got, total)


def test_full_split_keeps_patients_together(tmp_path: Path) -> None:
    split = make_split(REAL_ROOT, 0.15, 0.15, seed=0)  # no test/ folder here: test is carved from train
    patients = {name: {r.patient for r in recs} for name, recs in split.splits.items()}
    assert set(split.splits) == {"train", "val", "test"}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert sum(len(r) for r in split.splits.values()) == 1341 + 3875


@pytest.fixture(scope="module")
def sample_files(train_records) -> list[Path]:
    """Twenty files of each class, spread over the set."""
    chosen: list[Path] = []
    for label in range(len(CLASS_NAMES)):
        of_class = [r.path for r in train_records if r.label == label]
        chosen += of_class[:: len(of_class) // 20][:20]
    return chosen


def test_sample_decodes_through_the_cache_at_64px(sample_files: list[Path], tmp_path: Path) -> None:
    cache = DecodedImageCache(tmp_path / "cache", 64)
    rows, errors = cache.add(sample_files, progress=False)

    assert errors == []
    assert all(r >= 0 for r in rows)
    for path, row in zip(sample_files, rows, strict=True):
        pixels = cache.row(row)
        assert pixels.shape == (64, 64) and pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, load_for_model(path, 64))
        assert pixels.std() > 5  # a real film, not a blank
    # The cache keys are the files' SHA-256, as listed in the shared set's manifest.
    manifest = {}
    for line in (REAL_ROOT / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        manifest[Path(name).name] = digest
    for path, digest in zip(sample_files, cache.digests(sample_files), strict=True):
        assert digest == manifest[path.name] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_rgb_files_read_as_grey(sample_files: list[Path]) -> None:
    grey = read_grey(sample_files[0])
    assert grey.shape == (224, 224) and grey.ndim == 2 and grey.dtype == np.uint8


def test_symlinked_sample_scans_and_splits(sample_files: list[Path], tmp_path: Path) -> None:
    root = tmp_path / "linked"
    for path in sample_files:
        link = root / "train" / path.parent.name / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    found = scan_dataset(root)
    assert len(found["train"]) == len(sample_files)
    split = make_split(root, 0.2, 0.2, seed=0)
    assert sum(len(r) for r in split.splits.values()) == len(sample_files)
    assert all(r.path.is_symlink() for recs in split.splits.values() for r in recs)

"""Patient-wise, class-stratified splits and the saved split file (cxrdistill.data.splits)."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections import Counter
from pathlib import Path

import pytest

from cxrdistill.data.layout import CLASS_NAMES, ImageRecord, scan_dataset
from cxrdistill.data.patients import patient_or_file_id
from cxrdistill.data.splits import (
    DataSplit,
    SplitFileError,
    default_split_path,
    load_split,
    make_split,
    patients_in_several_splits,
    prepare_split,
    save_split,
    split_patients,
)
from cxrdistill.data.synth import SynthSpec, make_synthetic_dataset
from cxrdistill.files import DiskFullError

MAX_IMAGES_PER_PATIENT = 3
BIG_SPEC = SynthSpec(normal_patients=40, pneumonia_patients=50, images_per_patient=(1, MAX_IMAGES_PER_PATIENT),
                     image_size=(32, 32), test_fraction=0.0, seed=3)


@pytest.fixture(scope="module")
def no_test_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A train-only set (no test/ folder), big enough for meaningful proportions; tiny images."""
    root = tmp_path_factory.mktemp("splits") / "train_only"
    make_synthetic_dataset(root, BIG_SPEC)
    return root


def _paths(records: list[ImageRecord]) -> list[str]:
    return [str(r.path) for r in records]


def _patients(records: list[ImageRecord]) -> set[str]:
    return {r.patient for r in records}


def _assert_patient_disjoint(split: DataSplit | dict[str, list[ImageRecord]]) -> None:
    splits = split.splits if isinstance(split, DataSplit) else split
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = _patients(splits[a]) & _patients(splits[b])
            assert not shared, f"patients in both {a} and {b}: {sorted(shared)}"


def _records(spec: dict[str, tuple[int, int]]) -> list[ImageRecord]:
    """Fake records: patient -> (label, number of images)."""
    return [
        ImageRecord(Path(f"/data/{patient}_{k}.jpeg"), label, patient, "train")
        for patient, (label, count) in spec.items()
        for k in range(count)
    ]


# --------------------------------------------------------------------------- split_patients


def test_split_patients_keeps_every_record_once_and_patients_whole() -> None:
    records = _records({f"p{i}": (i % 2, 1 + i % 3) for i in range(30)})
    result = split_patients(records, {"val": 0.2, "test": 0.2}, seed=1)
    assert set(result) == {"train", "val", "test"}
    assert sorted(_paths([r for recs in result.values() for r in recs])) == sorted(_paths(records))
    _assert_patient_disjoint(result)
    for recs in result.values():
        assert _paths(recs) == sorted(_paths(recs))  # stable order, independent of the shuffle


def test_split_patients_proportions_per_class(no_test_root: Path) -> None:
    records = scan_dataset(no_test_root)["train"]
    fractions = {"val": 0.15, "test": 0.2}
    for seed in range(5):
        result = split_patients(records, fractions, seed)
        _assert_patient_disjoint(result)
        for label in range(len(CLASS_NAMES)):
            total = sum(r.label == label for r in records)
            for name, fraction in fractions.items():
                got = sum(r.label == label for r in result[name])
                # Whole patients only: off by at most one patient's worth of images.
                assert abs(got - fraction * total) <= MAX_IMAGES_PER_PATIENT, (seed, label, name, got, total)


def test_split_patients_is_a_function_of_the_seed() -> None:
    records = _records({f"p{i}": (i % 2, 1 + i % 2) for i in range(40)})
    fractions = {"val": 0.25}
    first = split_patients(records, fractions, seed=7)
    again = split_patients(list(reversed(records)), fractions, seed=7)  # input order does not matter
    other = split_patients(records, fractions, seed=8)
    assert {k: _paths(v) for k, v in first.items()} == {k: _paths(v) for k, v in again.items()}
    assert _paths(first["val"]) != _paths(other["val"])


def test_split_patients_never_splits_a_big_patient() -> None:
    # One patient holds half the images of the class: it cannot go to a 20% split without overfilling it.
    records = _records({"big": (0, 10), **{f"n{i}": (0, 1) for i in range(10)}, **{f"p{i}": (1, 1) for i in range(10)}})
    for seed in range(10):
        result = split_patients(records, {"val": 0.2}, seed)
        assert "big" in _patients(result["train"])
        assert 3 <= sum(r.label == 0 for r in result["val"]) <= 5


def test_split_patients_assigns_a_patient_with_both_classes_once() -> None:
    # Outside Kermany a patient can have NORMAL and PNEUMONIA films; each patient must still land in one split.
    mixed = [
        ImageRecord(Path(f"/data/m{i}_{k}.jpeg"), label, f"m{i}", "train")
        for i in range(20)
        for k, label in enumerate((0, 1, 1) if i % 2 else (0, 0, 1))
    ]
    records = mixed + _records({f"p{i}": (i % 2, 1 + i % 3) for i in range(40)})
    fractions = {"val": 0.2, "test": 0.2}
    for seed in range(5):
        result = split_patients(records, fractions, seed)
        assert sorted(_paths([r for recs in result.values() for r in recs])) == sorted(_paths(records))
        _assert_patient_disjoint(result)
        for label in range(len(CLASS_NAMES)):
            total = sum(r.label == label for r in records)
            for name, fraction in fractions.items():
                got = sum(r.label == label for r in result[name])
                assert abs(got - fraction * total) <= 2 * MAX_IMAGES_PER_PATIENT, (seed, label, name, got, total)


def test_patients_in_several_splits_names_each_shared_patient_and_its_splits() -> None:
    a1, a2, b1, c1, c2 = _records({"a": (0, 2), "b": (1, 1), "c": (1, 2)})
    splits = {"train": [a1], "val": [c1], "test": [a2, b1, c2]}
    assert patients_in_several_splits(splits) == {"a": ["test", "train"], "c": ["test", "val"]}
    records = [a1, a2, b1, c1, c2]
    assert patients_in_several_splits({"train": records}) == {}


# --------------------------------------------------------------------------- make_split


def test_make_split_keeps_existing_test_folder_and_carves_val_from_train(synth_root: Path) -> None:
    found = scan_dataset(synth_root)
    split = make_split(synth_root, val_fraction=0.2, test_fraction=0.3, seed=0)

    assert set(split.splits) == {"train", "val", "test"}
    assert _paths(split["test"]) == sorted(_paths(found["test"]))  # the test/ folder, untouched
    assert sorted(_paths(split["train"] + split["val"])) == sorted(_paths(found["train"]))
    _assert_patient_disjoint(split)
    for name, counts in split.counts().items():
        assert all(n > 0 for n in counts.values()), f"{name} lacks a class: {counts}"


def test_make_split_without_test_folder_carves_test_from_train(no_test_root: Path) -> None:
    assert not (no_test_root / "test").exists()
    records = scan_dataset(no_test_root)["train"]

    split = make_split(no_test_root, val_fraction=0.15, test_fraction=0.2, seed=0)

    assert set(split.splits) == {"train", "val", "test"}
    assert sorted(_paths([r for recs in split.splits.values() for r in recs])) == sorted(_paths(records))
    _assert_patient_disjoint(split)
    counts = split.counts()
    for label, name in enumerate(CLASS_NAMES):
        total = sum(r.label == label for r in records)
        assert abs(counts["val"][name] - 0.15 * total) <= MAX_IMAGES_PER_PATIENT
        assert abs(counts["test"][name] - 0.2 * total) <= MAX_IMAGES_PER_PATIENT
        assert counts["train"][name] > counts["test"][name] > 0


def test_make_split_same_seed_same_split_other_seed_other_split(no_test_root: Path) -> None:
    first = make_split(no_test_root, 0.15, 0.15, seed=11)
    again = make_split(no_test_root, 0.15, 0.15, seed=11)
    other = make_split(no_test_root, 0.15, 0.15, seed=12)
    assert {k: _paths(v) for k, v in first.splits.items()} == {k: _paths(v) for k, v in again.splits.items()}
    assert _paths(first["val"]) != _paths(other["val"])


def test_make_split_pools_a_val_folder_with_train(synth_copy: Path) -> None:
    # The published set has a tiny val/ folder; it is pooled with train/ and re-split by patient.
    val = synth_copy / "val"
    for name in CLASS_NAMES:
        (val / name).mkdir(parents=True)
    moved = []
    for name in CLASS_NAMES:
        file = sorted((synth_copy / "train" / name).glob("*.jpeg"))[0]
        moved.append(file.name)
        file.rename(val / name / file.name)

    split = make_split(synth_copy, 0.2, 0.0, seed=0)

    pooled = sorted(r.path.name for r in split["train"] + split["val"])
    assert set(moved) <= set(pooled)
    assert len(pooled) == len(list((synth_copy / "train").rglob("*.jpeg"))) + len(moved)
    _assert_patient_disjoint(split)


def test_make_split_warns_when_the_kept_test_folder_shares_patients_with_train(
    synth_copy: Path, tmp_path: Path
) -> None:
    # Kermany restarts its patient numbers in test/ (a later cohort), so a shared id is a warning, not an error;
    # the split file records the shared ids so that a reader of the results can judge.
    leaked = sorted((synth_copy / "train" / "PNEUMONIA").glob("*.jpeg"))[0]
    shutil.copy(leaked, synth_copy / "test" / "PNEUMONIA" / leaked.name)
    patient = patient_or_file_id(leaked)

    with pytest.warns(UserWarning, match=f"{patient}.*test/") as record:
        split = prepare_split(synth_copy, tmp_path / "split.json", 0.2, 0.2, seed=0)
    assert "move test/ out" in str(record[0].message)
    payload = json.loads((tmp_path / "split.json").read_text())
    assert payload["patients_in_several_splits"] == patients_in_several_splits(split.splits)
    assert list(payload["patients_in_several_splits"]) == [patient]


def test_make_split_of_patient_disjoint_folders_does_not_warn(synth_root: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_split(synth_root, tmp_path / "split.json", 0.2, 0.2, seed=0)
    assert json.loads((tmp_path / "split.json").read_text())["patients_in_several_splits"] == {}


def test_make_split_refuses_a_bare_class_folder(synth_root: Path) -> None:
    with pytest.raises(SplitFileError, match="bare NORMAL/PNEUMONIA folder"):
        make_split(synth_root / "test", 0.2, 0.2, seed=0)


def test_make_split_refuses_data_without_train_folder(synth_copy: Path) -> None:
    (synth_copy / "train").rename(synth_copy / "elsewhere")
    with pytest.raises(SplitFileError, match="no train/ folder"):
        make_split(synth_copy, 0.2, 0.2, seed=0)


# --------------------------------------------------------------------------- the split file


def test_prepare_split_writes_a_json_file_and_reuses_it(synth_root: Path, tmp_path: Path) -> None:
    split_file = tmp_path / "splits" / "split.json"
    first = prepare_split(synth_root, split_file, 0.2, 0.2, seed=0)

    payload = json.loads(split_file.read_text())
    assert payload["seed"] == 0
    assert payload["counts"] == first.counts()
    assert set(payload["splits"]) == {"train", "val", "test"}
    listed = {name: sorted(row[0] for row in rows) for name, rows in payload["splits"].items()}
    assert listed == {name: sorted(str(r.path.relative_to(synth_root)) for r in recs)
                      for name, recs in first.splits.items()}
    written = split_file.read_bytes()

    # Other fractions and another seed: the file wins, and it is not rewritten.
    second = prepare_split(synth_root, split_file, 0.5, 0.1, seed=99)

    assert second.splits == first.splits
    assert split_file.read_bytes() == written


def test_load_split_gives_back_the_saved_split(no_test_root: Path, tmp_path: Path) -> None:
    split = make_split(no_test_root, 0.15, 0.15, seed=0)
    save_split(split, tmp_path / "s.json", seed=0)
    loaded = load_split(tmp_path / "s.json", no_test_root)
    assert loaded.counts() == split.counts()
    assert loaded.splits == split.splits  # same paths, labels, patients and source folders


def test_split_file_holds_relative_paths_so_the_data_can_move(synth_copy: Path, tmp_path: Path) -> None:
    split_file = tmp_path / "split.json"
    split = prepare_split(synth_copy, split_file, 0.2, 0.2, seed=0)
    moved = Path(synth_copy.rename(tmp_path / "moved"))
    loaded = load_split(split_file, moved)
    assert {k: [r.path.relative_to(moved) for r in v] for k, v in loaded.splits.items()} == {
        k: [r.path.relative_to(synth_copy) for r in v] for k, v in split.splits.items()
    }
    assert all(r.path.is_file() for recs in loaded.splits.values() for r in recs)


def test_split_file_listing_a_deleted_image_tells_to_delete_the_split_file(synth_copy: Path, tmp_path: Path) -> None:
    split_file = tmp_path / "split.json"
    split = prepare_split(synth_copy, split_file, 0.2, 0.2, seed=0)
    victim = split["val"][0].path
    victim.unlink()

    with pytest.raises(SplitFileError) as info:
        prepare_split(synth_copy, split_file, 0.2, 0.2, seed=0)

    message = str(info.value)
    assert str(split_file) in message
    assert "delete the split file" in message
    assert victim.name in message


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff garbage",
        b'{"version": 1, "splits": {"train": [["train/NORMAL/a.jpeg", 0, ',  # cut short
        b"",
        b"[]",
        b"null",
        b'{"version": 1}',
        b'{"splits": ["train"]}',
        b'{"splits": {"train": [["train/NORMAL/IM-0001-0001.jpeg", 0]]}}',  # a row missing its patient
        b'{"splits": {"train": [["train/NORMAL/IM-0001-0001.jpeg", "zero", "IM-0001"]]}}',
        b'{"splits": {"train": [["train/NORMAL/IM-0001-0001.jpeg", 7, "IM-0001"]]}}',  # no such class
    ],
)
def test_corrupt_split_file_is_a_split_file_error(synth_root: Path, tmp_path: Path, content: bytes) -> None:
    split_file = tmp_path / "split.json"
    split_file.write_bytes(content)
    with pytest.raises(SplitFileError) as info:
        prepare_split(synth_root, split_file, 0.2, 0.2, seed=0)
    assert str(split_file) in str(info.value)
    assert "delete" in str(info.value)


def test_split_file_write_leaves_no_temporary_files(synth_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "splits"
    for seed in range(3):
        prepare_split(synth_root, folder / f"s{seed}.json", 0.2, 0.2, seed=seed)
    assert sorted(p.name for p in folder.iterdir()) == ["s0.json", "s1.json", "s2.json"]


def test_failed_split_write_keeps_the_old_file_and_no_temporary(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split_file = tmp_path / "split.json"
    split = prepare_split(synth_root, split_file, 0.2, 0.2, seed=0)
    before = split_file.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # fails after the new content was written to the temporary
    with pytest.raises(DiskFullError, match="no space left on the device .* previous version of split.json"):
        save_split(DataSplit(split.root, {"train": split["train"]}), split_file, seed=5)

    assert split_file.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["split.json"]


def test_default_split_path_depends_on_root_seed_and_fractions(synth_root: Path, tmp_path: Path) -> None:
    base = default_split_path(tmp_path / "cache", synth_root, 0, {"val": 0.15, "test": 0.15})
    assert base.parent == tmp_path / "cache" / "splits" and base.suffix == ".json"
    assert base == default_split_path(tmp_path / "cache", synth_root, 0, {"test": 0.15, "val": 0.15})
    other_root = Path(shutil.copytree(synth_root, tmp_path / "other" / synth_root.name))
    others = {
        default_split_path(tmp_path / "cache", synth_root, 1, {"val": 0.15, "test": 0.15}),
        default_split_path(tmp_path / "cache", synth_root, 0, {"val": 0.2, "test": 0.15}),
        default_split_path(tmp_path / "cache", other_root, 0, {"val": 0.15, "test": 0.15}),
    }
    assert base not in others and len(others) == 3


def test_default_split_path_changes_when_images_are_added_or_removed(synth_copy: Path, tmp_path: Path) -> None:
    # A reused split would silently leave out images added later; keying by the file list makes a new split.
    fractions = {"val": 0.2, "test": 0.2}
    before = default_split_path(tmp_path / "cache", synth_copy, 0, fractions)
    added = synth_copy / "train" / "NORMAL" / "IM-9000-0001.jpeg"
    shutil.copy(sorted((synth_copy / "train" / "NORMAL").glob("*.jpeg"))[0], added)
    with_added = default_split_path(tmp_path / "cache", synth_copy, 0, fractions)
    added.unlink()
    assert default_split_path(tmp_path / "cache", synth_copy, 0, fractions) == before
    sorted((synth_copy / "test" / "PNEUMONIA").glob("*.jpeg"))[0].unlink()
    with_removed = default_split_path(tmp_path / "cache", synth_copy, 0, fractions)
    assert len({before, with_added, with_removed}) == 3

    # Only images count: a note beside them leaves the key alone.
    (synth_copy / "train" / "NORMAL" / "notes.txt").write_text("not an image")
    assert default_split_path(tmp_path / "cache", synth_copy, 0, fractions) == with_removed


def test_split_counts(synth_root: Path) -> None:
    split = make_split(synth_root, 0.2, 0.2, seed=0)
    counts = split.counts()
    for name, records in split.splits.items():
        expected = Counter(r.class_name for r in records)
        assert counts[name] == {c: expected[c] for c in CLASS_NAMES}

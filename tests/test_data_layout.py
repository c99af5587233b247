"""Finding images in the Kermany folder layout (cxrdistill.data.layout) and patient ids (cxrdistill.data.patients)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrdistill.data.layout import CLASS_NAMES, DatasetLayoutError, scan_dataset
from cxrdistill.data.patients import patient_id, patient_or_file_id


def _jpeg(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(path, format="JPEG")
    return path


def _names(records) -> list[str]:
    return sorted(r.path.name for r in records)


# --------------------------------------------------------------------------- scan_dataset


def test_published_layout_with_mixed_case_folder_names(tmp_path: Path) -> None:
    _jpeg(tmp_path / "Train" / "normal" / "IM-0001-0001.jpeg")
    _jpeg(tmp_path / "Train" / "normal" / "IM-0001-0002.JPG")
    _jpeg(tmp_path / "Train" / "Pneumonia" / "person3_virus_7.jpeg")
    _jpeg(tmp_path / "TEST" / "NORMAL" / "IM-0002-0001.jpeg")
    _jpeg(tmp_path / "TEST" / "pneumonia" / "person4_bacteria_1.jpeg")

    found = scan_dataset(tmp_path)

    assert set(found) == {"train", "test"}
    train = {r.path.name: r for r in found["train"]}
    assert set(train) == {"IM-0001-0001.jpeg", "IM-0001-0002.JPG", "person3_virus_7.jpeg"}
    assert train["IM-0001-0001.jpeg"].label == CLASS_NAMES.index("NORMAL")
    assert train["IM-0001-0002.JPG"].class_name == "NORMAL"
    assert train["person3_virus_7.jpeg"].class_name == "PNEUMONIA"
    assert train["person3_virus_7.jpeg"].patient == "person3"
    assert train["IM-0001-0001.jpeg"].patient == train["IM-0001-0002.JPG"].patient == "IM-0001"
    # Records point at the real files (with their real spelling) and remember where they came from.
    assert all(r.path.is_file() and r.source == "train" for r in found["train"])
    assert train["IM-0001-0001.jpeg"].path.parent == tmp_path / "Train" / "normal"
    assert {r.source for r in found["test"]} == {"test"}
    assert _names(found["test"]) == ["IM-0002-0001.jpeg", "person4_bacteria_1.jpeg"]


def test_bare_class_folder_is_one_source_with_empty_key(tmp_path: Path) -> None:
    _jpeg(tmp_path / "NORMAL" / "a.png")
    _jpeg(tmp_path / "NORMAL" / "b.jpeg")
    _jpeg(tmp_path / "PNEUMONIA" / "c.jpeg")

    found = scan_dataset(tmp_path)

    assert list(found) == [""]
    assert [(r.path.name, r.class_name, r.source) for r in sorted(found[""], key=lambda r: r.path.name)] == [
        ("a.png", "NORMAL", ""),
        ("b.jpeg", "NORMAL", ""),
        ("c.jpeg", "PNEUMONIA", ""),
    ]


def test_scan_of_synthetic_set_matches_the_files_on_disk(synth_root: Path) -> None:
    found = scan_dataset(synth_root)
    assert set(found) == {"train", "test"}
    for split, records in found.items():
        for label, name in enumerate(CLASS_NAMES):
            on_disk = sorted(p.name for p in (synth_root / split / name).glob("*.jpeg"))
            assert _names(r for r in records if r.label == label) == on_disk
            assert on_disk, f"{split}/{name} of the fixture should not be empty"


def test_non_image_files_are_ignored(tmp_path: Path) -> None:
    _jpeg(tmp_path / "train" / "NORMAL" / "IM-0001-0001.jpeg")
    _jpeg(tmp_path / "train" / "PNEUMONIA" / "person1_virus_1.jpeg")
    (tmp_path / "train" / "NORMAL" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "NORMAL" / "Thumbs.db").write_bytes(b"\0\1")
    (tmp_path / "train" / "PNEUMONIA" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "train" / "PNEUMONIA" / "._person1_virus_1.jpeg").write_bytes(b"\0")  # macOS resource fork

    found = scan_dataset(tmp_path)

    assert _names(found["train"]) == ["IM-0001-0001.jpeg", "person1_virus_1.jpeg"]


def test_images_in_nested_subfolders_of_a_class_are_found(tmp_path: Path) -> None:
    _jpeg(tmp_path / "NORMAL" / "batch1" / "IM-0001-0001.jpeg")
    _jpeg(tmp_path / "PNEUMONIA" / "person1_virus_1.jpeg")
    assert _names(scan_dataset(tmp_path)[""]) == ["IM-0001-0001.jpeg", "person1_virus_1.jpeg"]


def test_missing_root_is_a_layout_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetLayoutError, match="does not exist") as info:
        scan_dataset(missing)
    assert str(missing) in str(info.value)


def test_root_that_is_a_file_is_a_layout_error(tmp_path: Path) -> None:
    file = tmp_path / "data.zip"
    file.write_bytes(b"PK")
    with pytest.raises(DatasetLayoutError, match="is a file") as info:
        scan_dataset(file)
    assert str(file) in str(info.value)


def test_folder_with_unrelated_subfolders_is_a_layout_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(DatasetLayoutError) as info:
        scan_dataset(tmp_path)
    message = str(info.value)
    assert "images" in message and "labels" in message  # says what it found
    assert "NORMAL" in message and "train" in message  # and what it expected


def test_empty_root_is_a_layout_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="no folders"):
        scan_dataset(tmp_path)


@pytest.mark.parametrize("present, missing", [("NORMAL", "PNEUMONIA"), ("PNEUMONIA", "NORMAL")])
def test_missing_class_folder_names_the_missing_class(tmp_path: Path, present: str, missing: str) -> None:
    _jpeg(tmp_path / "train" / present / "x.jpeg")
    with pytest.raises(DatasetLayoutError) as info:
        scan_dataset(tmp_path)
    assert f"{missing}/ is missing" in str(info.value)
    assert str(tmp_path / "train") in str(info.value)


def test_missing_class_folder_in_bare_layout(tmp_path: Path) -> None:
    _jpeg(tmp_path / "normal" / "x.jpeg")
    with pytest.raises(DatasetLayoutError, match="PNEUMONIA/ is missing"):
        scan_dataset(tmp_path)


def test_split_folder_without_class_folders_is_a_layout_error(tmp_path: Path) -> None:
    _jpeg(tmp_path / "train" / "x.jpeg")
    with pytest.raises(DatasetLayoutError, match="no NORMAL/ or PNEUMONIA/ folder") as info:
        scan_dataset(tmp_path)
    assert str(tmp_path / "train") in str(info.value)


def test_empty_class_names_the_folder(tmp_path: Path) -> None:
    _jpeg(tmp_path / "train" / "NORMAL" / "IM-0001-0001.jpeg")
    empty = tmp_path / "train" / "PNEUMONIA"
    empty.mkdir(parents=True)
    (empty / "readme.txt").write_text("images go here")  # a non-image file does not count
    with pytest.raises(DatasetLayoutError) as info:
        scan_dataset(tmp_path)
    assert str(empty) in str(info.value)
    assert "PNEUMONIA has no images" in str(info.value)


# --------------------------------------------------------------------------- patient ids


@pytest.mark.parametrize(
    "name, expected",
    [
        ("person12_bacteria_3.jpeg", "person12"),
        ("person12_virus_7.jpeg", "person12"),
        ("person0012_virus_7.jpeg", "person12"),
        ("PERSON12_Bacteria_3.JPEG", "person12"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("im-0115-0001.png", "IM-0115"),
        ("NORMAL2-IM-0115-0001.jpeg", "IM-0115"),  # merged with IM-0115 on purpose: the safe side
        ("IM-115-0001.jpeg", "IM-0115"),
        # Spellings that occur in the published training set:
        ("IM-0429-0001-0002.jpeg", "IM-0429"),
        ("NORMAL2-IM-1345-0001-0001.jpeg", "IM-1345"),
        ("person447_virus_921_1.jpeg", "person447"),
    ],
)
def test_patient_id_of_kermany_names(name: str, expected: str) -> None:
    assert patient_id(name) == expected
    assert patient_id(Path("some/folder") / name) == expected
    assert patient_or_file_id(name) == expected


def test_patients_differ_by_number() -> None:
    assert patient_id("person12_virus_1.jpeg") != patient_id("person121_virus_1.jpeg")
    assert patient_id("IM-0115-0001.jpeg") != patient_id("IM-0116-0001.jpeg")
    # A pneumonia person number and a normal IM number never collide.
    assert patient_id("person115_virus_1.jpeg") != patient_id("IM-0115-0001.jpeg")


@pytest.mark.parametrize(
    "name",
    ["scan.jpeg", "person_bacteria_3.jpeg", "person12_fungus_3.jpeg", "IM-0115.jpeg", "xIM-0115-0001.jpeg",
     "NORMAL3-IM-0115-0001x.jpeg", "person12_virus.jpeg"],
)
def test_unknown_names_have_no_patient_and_fall_back_to_the_file(name: str) -> None:
    assert patient_id(name) is None
    assert patient_or_file_id(Path("a/b") / name) == f"file:{name}"


def test_unknown_names_are_their_own_patient_in_a_scan(tmp_path: Path) -> None:
    _jpeg(tmp_path / "NORMAL" / "scan1.jpeg")
    _jpeg(tmp_path / "NORMAL" / "scan2.jpeg")
    _jpeg(tmp_path / "PNEUMONIA" / "person5_virus_1.jpeg")
    patients = {r.path.name: r.patient for r in scan_dataset(tmp_path)[""]}
    assert patients == {"scan1.jpeg": "file:scan1.jpeg", "scan2.jpeg": "file:scan2.jpeg",
                        "person5_virus_1.jpeg": "person5"}

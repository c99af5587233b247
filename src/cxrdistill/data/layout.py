"""Finding images in the Kermany folder layout, with errors that say what is wrong and how to fix it.

Accepted layouts (folder names case-insensitive):

* ``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*`` — the published layout; ``val`` and ``test`` optional;
* ``ROOT/{NORMAL,PNEUMONIA}/*`` — a bare folder of two classes, e.g. an external test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxrdistill.data.io import is_image_file
from cxrdistill.data.patients import patient_or_file_id
from cxrdistill.errors import CxrDistillError

CLASS_NAMES: tuple[str, ...] = ("NORMAL", "PNEUMONIA")
"""Label order everywhere: index 1 (PNEUMONIA) is the positive class."""
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
EXPECTED_LAYOUT = "ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg or ROOT/{NORMAL,PNEUMONIA}/*.jpeg"


class DatasetLayoutError(CxrDistillError, ValueError):
    """The folder does not look like a chest X-ray data set this toolkit can read."""


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: int
    patient: str
    source: str
    """The folder the image came from: ``train``, ``val``, ``test`` or ``""`` for a bare class folder."""

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]


def _child_dirs(folder: Path) -> dict[str, Path]:
    return {child.name.lower(): child for child in folder.iterdir() if child.is_dir()}


def find_class_folders(folder: Path) -> dict[int, Path] | None:
    """Label -> class folder, or ``None`` when ``folder`` holds no class folder at all."""
    children = _child_dirs(folder)
    found = {label: children[name.lower()] for label, name in enumerate(CLASS_NAMES) if name.lower() in children}
    if not found:
        return None
    missing = [CLASS_NAMES[label] for label in range(len(CLASS_NAMES)) if label not in found]
    if missing:
        raise DatasetLayoutError(
            f"{folder}: class folder {missing[0]}/ is missing (found {sorted(children)}); "
            f"each split needs both {' and '.join(CLASS_NAMES)}"
        )
    return found


def list_class_images(folder: Path, source: str) -> tuple[list[ImageRecord], list[Path]]:
    """Image records of one split folder and the non-image files found beside them."""
    class_folders = find_class_folders(folder)
    if class_folders is None:
        raise DatasetLayoutError(f"{folder}: no NORMAL/ or PNEUMONIA/ folder inside; expected {EXPECTED_LAYOUT}")
    records: list[ImageRecord] = []
    other_files: list[Path] = []
    for label, class_folder in sorted(class_folders.items()):
        files = sorted(p for p in class_folder.rglob("*") if p.is_file())
        images = [p for p in files if is_image_file(p)]
        other_files += [p for p in files if not is_image_file(p)]
        if not images:
            raise DatasetLayoutError(
                f"{class_folder}: class {CLASS_NAMES[label]} has no images "
                f"(looked for .jpeg/.jpg/.png/.tif/.bmp/.dcm); a classifier needs examples of both classes"
            )
        records += [ImageRecord(p, label, patient_or_file_id(p), source) for p in images]
    return records, other_files


def scan_dataset(root: str | Path) -> dict[str, list[ImageRecord]]:
    """Records per source folder (``train``/``val``/``test``, or ``""`` for a bare two-class folder)."""
    root = Path(root)
    if not root.exists():
        raise DatasetLayoutError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DatasetLayoutError(f"{root} is a file; expected a folder laid out as {EXPECTED_LAYOUT}")
    if find_class_folders(root) is not None:
        return {"": list_class_images(root, "")[0]}
    children = _child_dirs(root)
    splits = {name: children[name] for name in SPLIT_NAMES if name in children}
    if not splits:
        raise DatasetLayoutError(
            f"{root}: found neither split folders (train/val/test) nor class folders (NORMAL/PNEUMONIA), "
            f"only {sorted(children) or 'no folders'}; expected {EXPECTED_LAYOUT}"
        )
    return {name: list_class_images(folder, name)[0] for name, folder in splits.items()}

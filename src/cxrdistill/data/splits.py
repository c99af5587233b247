"""Patient-wise, class-stratified splits, saved to a file so every later run uses the same one.

Several images of one patient are near-copies; letting them straddle train and validation inflates
validation scores. Patients are therefore assigned whole, per class, until each split holds its share
of that class's images. The split is a pure function of the file list, the fractions and the seed.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrdistill.data.layout import CLASS_NAMES, SPLIT_NAMES, ImageRecord, scan_dataset
from cxrdistill.errors import CxrDistillError
from cxrdistill.files import atomic_write_json, text_digest

SPLIT_FILE_VERSION = 1


class SplitFileError(CxrDistillError, ValueError):
    """A saved split that no longer matches the data on disk."""


@dataclass(frozen=True)
class DataSplit:
    root: Path
    splits: dict[str, list[ImageRecord]]

    def __getitem__(self, name: str) -> list[ImageRecord]:
        return self.splits[name]

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            name: {c: sum(r.label == i for r in records) for i, c in enumerate(CLASS_NAMES)}
            for name, records in self.splits.items()
        }


def split_patients(
    records: list[ImageRecord], fractions: dict[str, float], seed: int
) -> dict[str, list[ImageRecord]]:
    """Assign whole patients to the named splits (the remainder goes to ``train``), stratified by class."""
    rng = np.random.default_rng(seed)
    result: dict[str, list[ImageRecord]] = {"train": [], **{name: [] for name in fractions}}
    for label in range(len(CLASS_NAMES)):
        by_patient: dict[str, list[ImageRecord]] = defaultdict(list)
        for record in records:
            if record.label == label:
                by_patient[record.patient].append(record)
        patients = sorted(by_patient)
        rng.shuffle(patients)
        total = sum(len(v) for v in by_patient.values())
        targets = {name: fraction * total for name, fraction in fractions.items()}
        filled = dict.fromkeys(fractions, 0)
        for patient in patients:
            images = by_patient[patient]
            # The split furthest below its target takes the next patient; train takes the rest.
            name = max(fractions, key=lambda n: targets[n] - filled[n], default="train")
            if name != "train" and filled[name] + len(images) / 2 <= targets[name]:
                filled[name] += len(images)
            else:
                name = "train"
            result[name] += images
    return {name: sorted(recs, key=lambda r: str(r.path)) for name, recs in result.items()}


def default_split_path(cache_dir: str | Path, root: Path, seed: int, fractions: dict[str, float]) -> Path:
    key = text_digest(str(root.resolve()), seed, sorted(fractions.items()))
    return Path(cache_dir) / "splits" / f"{root.name}-seed{seed}-{key}.json"


def make_split(root: str | Path, val_fraction: float, test_fraction: float, seed: int) -> DataSplit:
    """Split ``root``: its ``train/`` (and ``val/``) pool by patient; an existing ``test/`` is kept as is."""
    root = Path(root)
    found = scan_dataset(root)
    if "" in found:
        raise SplitFileError(f"{root} is a bare NORMAL/PNEUMONIA folder: use it for evaluation, not training")
    if "train" not in found:
        raise SplitFileError(f"{root} has no train/ folder to train on")
    pool = found["train"] + found.get("val", [])
    fractions = {"val": val_fraction}
    if "test" not in found:
        fractions["test"] = test_fraction
    splits = split_patients(pool, fractions, seed)
    if "test" in found:
        splits["test"] = found["test"]
    for name, records in splits.items():
        present = {r.label for r in records}
        if len(present) < len(CLASS_NAMES) and name != "train":
            raise SplitFileError(f"split {name!r} of {root} has no images of one class; use more data")
    return DataSplit(root, splits)


def save_split(split: DataSplit, path: str | Path, seed: int) -> None:
    atomic_write_json(
        path,
        {
            "version": SPLIT_FILE_VERSION,
            "root": str(split.root.resolve()),
            "seed": seed,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "counts": split.counts(),
            "splits": {
                name: [[str(r.path.relative_to(split.root)), r.label, r.patient] for r in records]
                for name, records in split.splits.items()
            },
        },
    )


def load_split(path: str | Path, root: str | Path) -> DataSplit:
    """Read a saved split; every listed file must still exist under ``root``."""
    path, root = Path(path), Path(root)
    try:
        payload = json.loads(path.read_text())
        entries = {
            str(name): [(str(relative), int(label), str(patient)) for relative, label, patient in rows]
            for name, rows in payload["splits"].items()
        }
        if any(label not in range(len(CLASS_NAMES)) for rows in entries.values() for _, label, _ in rows):
            raise ValueError("a label is out of range")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        # Any shape other than the one save_split writes (cut short, edited by hand, not JSON at all).
        raise SplitFileError(f"split file {path} is unreadable ({error}); delete it to make a new split") from error
    splits: dict[str, list[ImageRecord]] = {}
    missing: list[str] = []
    for name, rows in entries.items():
        splits[name] = []
        for relative, label, patient in rows:
            file = root / relative
            if not file.is_file():
                missing.append(relative)
            # The source is the folder the file lies in, as scan_dataset reports it (not the split it went to).
            folder = Path(relative).parts[0].lower() if Path(relative).parts else ""
            splits[name].append(ImageRecord(file, label, patient, folder if folder in SPLIT_NAMES else ""))
    if missing:
        raise SplitFileError(
            f"split file {path} lists {len(missing)} file(s) missing under {root}, e.g. {missing[0]}; "
            f"delete the split file to re-split (later runs will then use the new split)"
        )
    return DataSplit(root, splits)


def prepare_split(
    root: str | Path, split_file: str | Path, val_fraction: float, test_fraction: float, seed: int
) -> DataSplit:
    """Reuse the split saved at ``split_file`` or make and save one."""
    split_file = Path(split_file)
    if split_file.is_file():
        return load_split(split_file, root)
    split = make_split(root, val_fraction, test_fraction, seed)
    save_split(split, split_file, seed)
    return split

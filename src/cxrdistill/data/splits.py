"""Patient-wise, class-stratified splits, saved to a file so every later run uses the same one.

Several images of one patient are near-copies; letting them straddle train and validation inflates
validation scores. Patients are therefore assigned whole, each once, until each split holds its share
of each class's images. The split is a pure function of the file list, the fractions and the seed, and
its cache file is keyed by all four, so adding or removing images makes a new split.

A ``test/`` folder that comes with the data is kept as it is. Its patient ids may also occur in
``train/``: in the published Kermany set they do, because the numbering restarts in ``test/`` (a later
cohort, different children), so this cannot be an error. It is a warning naming the shared ids, and the
split file lists them under ``patients_in_several_splits`` so that whoever reads the results can judge.
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
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


def patients_in_several_splits(splits: Mapping[str, Iterable[ImageRecord]]) -> dict[str, list[str]]:
    """Each patient found in more than one of the named groups of records, with those names sorted."""
    splits_of_patient: dict[str, set[str]] = defaultdict(set)
    for name, records in splits.items():
        for record in records:
            splits_of_patient[record.patient].add(name)
    return {patient: sorted(names) for patient, names in sorted(splits_of_patient.items()) if len(names) > 1}


def split_patients(
    records: list[ImageRecord], fractions: dict[str, float], seed: int
) -> dict[str, list[ImageRecord]]:
    """Assign whole patients to the named splits (the remainder goes to ``train``), stratified by class.

    A patient is stratified by its majority class (ties: the lower label) and goes with all its images,
    so one with films of both classes still lands in a single split. Kermany's patients each have one
    class, so there this is plain per-class stratification.
    """
    rng = np.random.default_rng(seed)
    by_patient: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_patient[record.patient].append(record)
    patients_by_class: dict[int, list[str]] = defaultdict(list)
    for patient, images in sorted(by_patient.items()):
        patients_by_class[_majority_label(images)].append(patient)
    result: dict[str, list[ImageRecord]] = {"train": [], **{name: [] for name in fractions}}
    for label in range(len(CLASS_NAMES)):
        patients = patients_by_class[label]
        rng.shuffle(patients)
        total = sum(len(by_patient[patient]) for patient in patients)
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


def _majority_label(images: list[ImageRecord]) -> int:
    counts = Counter(record.label for record in images)
    return max(range(len(CLASS_NAMES)), key=lambda label: counts[label])  # max keeps the first (lower) on ties


def default_split_path(cache_dir: str | Path, root: Path, seed: int, fractions: dict[str, float]) -> Path:
    """Where the split of ``root`` is cached, keyed by the root, seed, fractions and list of image files.

    The file list (relative paths only; nothing is read or hashed) is in the key so that images added
    or removed later make a new split instead of being silently left out of a reused one.
    """
    files = sorted(str(r.path.relative_to(root)) for records in scan_dataset(root).values() for r in records)
    key = text_digest(str(root.resolve()), seed, sorted(fractions.items()), files)
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
        _warn_of_test_patients_in_train(root, pool, found["test"])
    for name, records in splits.items():
        present = {r.label for r in records}
        if len(present) < len(CLASS_NAMES) and name != "train":
            raise SplitFileError(f"split {name!r} of {root} has no images of one class; use more data")
    return DataSplit(root, splits)


def _warn_of_test_patients_in_train(root: Path, pool: list[ImageRecord], test: list[ImageRecord]) -> None:
    """Warn (not refuse: Kermany's numbering restarts in test/, see the module docstring) of shared patient ids."""
    shared = list(patients_in_several_splits({"train": pool, "test": test}))
    if shared:
        warnings.warn(
            f"{len(shared)} patient id(s) of {root}/test/ also occur in train/ or val/, e.g. "
            f"{', '.join(shared[:5])}; if they are the same people, test scores are inflated. In the published "
            f"Kermany set this is expected (its numbering restarts in test/). Otherwise move test/ out of {root} "
            f"so that a patient-wise test split is made from train/. The split file lists them all under "
            f"'patients_in_several_splits'.",
            stacklevel=3,
        )


def save_split(split: DataSplit, path: str | Path, seed: int) -> None:
    atomic_write_json(
        path,
        {
            "version": SPLIT_FILE_VERSION,
            "root": str(split.root.resolve()),
            "seed": seed,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "counts": split.counts(),
            "patients_in_several_splits": patients_in_several_splits(split.splits),
            "splits": {
                name: [[str(r.path.relative_to(split.root)), r.label, r.patient] for r in records]
                for name, records in split.splits.items()
            },
        },
    )


def split_digest(split: DataSplit) -> str:
    """A short hash of which file went to which split with which label and patient (stored in checkpoints)."""
    return text_digest({name: sorted([str(r.path.relative_to(split.root)), r.label, r.patient] for r in records)
                        for name, records in split.splits.items()})


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

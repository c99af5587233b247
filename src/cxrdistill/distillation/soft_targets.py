"""A teacher's knowledge without the teacher: its logits for a fixed set of images, in one small JSON file.

A teacher worth distilling from may cost hours to train, far more than the student it teaches. When
the images the students train on are known in advance (the bundled sample), the teacher's logits for
them are all a student needs: :func:`write_soft_targets` scores every image under a Kermany-layout
root once and stores, per image, its content digest (the key cached KD looks images up by), its
folder, label and the two logits, with the teacher's preprocessing and a line on what the teacher was
trained on. ``distill.teacher`` then names the file instead of a checkpoint, and the student trains as
with a cached teacher. The file is plain JSON, so an untrusted one cannot run code; every field is
checked when it is read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrdistill.data.cache import FileHasher
from cxrdistill.data.layout import CLASS_NAMES, ImageRecord, scan_dataset
from cxrdistill.data.preprocess import Preprocessing
from cxrdistill.errors import CxrDistillError
from cxrdistill.evaluation.evaluate import local_data_config, predict_records
from cxrdistill.evaluation.predict import Predictions
from cxrdistill.files import atomic_write_json, file_digest
from cxrdistill.runtime.checkpoint import check_class_names, checkpoint_files, model_from_checkpoint

SOFT_TARGETS_FORMAT = "cxrdistill-soft-targets/1"
SOFT_TARGETS_SUFFIX = ".json"
"""``distill.teacher`` naming a ``.json`` file means soft targets; anything else is a checkpoint."""
LOGIT_TOLERANCE = 1e-3
"""How far two entries of one image may differ: logits are stored to 5 decimals, batches may round apart."""


class SoftTargetsError(CxrDistillError, ValueError):
    """A soft-target file that is malformed, or does not cover the images a student trains on."""


def is_soft_target_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() == SOFT_TARGETS_SUFFIX


@dataclass(frozen=True)
class SoftTargetEntry:
    file: str
    """Path under the scored root (``train/NORMAL/x.jpeg``): for people, and to tell its split."""
    digest: str
    label: int
    logits: tuple[float, float]


@dataclass(frozen=True)
class SoftTargets:
    """A teacher as a table: logits by image content digest, and the preprocessing they were made with."""

    path: Path
    teacher: dict[str, Any]
    """What made them: architecture, input size, intensity normalisation, border crop, weights digest, about."""
    entries: tuple[SoftTargetEntry, ...]

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.of(self.teacher)

    @property
    def table(self) -> dict[str, torch.Tensor]:
        return {entry.digest: torch.tensor(entry.logits) for entry in self.entries}

    def predictions(self, folder: str) -> Predictions:
        """The teacher's predictions on the images of one top folder (``test``), to report it beside its students."""
        chosen = [e for e in self.entries if Path(e.file).parts[0] == folder]
        if not chosen:
            raise SoftTargetsError(f"{self.path} has no images under {folder}/")
        return Predictions(np.array([e.label for e in chosen]), np.array([e.logits for e in chosen], dtype=np.float32),
                           [e.digest for e in chosen])

    def check_covers(self, records: list[ImageRecord], hasher: FileHasher) -> None:
        """Every image a student trains on must have a target; a file made for other images is refused up front."""
        known = {entry.digest for entry in self.entries}
        missing = [r.path for r in records if hasher.digest(r.path) not in known]
        hasher.save()
        if missing:
            raise SoftTargetsError(
                f"soft targets {self.path} have no entry for {len(missing)} of the {len(records)} training images "
                f"(e.g. {missing[0]}): they were made for other images; distil from a teacher checkpoint instead")


def write_soft_targets(
    teacher_checkpoint: str | Path, root: str | Path, out: str | Path, about: str, progress: bool = True,
) -> SoftTargets:
    """Score every image under ``root`` (all its split folders) with the teacher and write the table to ``out``."""
    root = Path(root)
    records = sorted((r for split in scan_dataset(root).values() for r in split), key=lambda r: str(r.path))
    if not records:
        raise SoftTargetsError(f"no images under {root} to compute soft targets for")
    model, metadata = model_from_checkpoint(teacher_checkpoint)  # raw logits, as a cached teacher stores them
    check_class_names(metadata, f"teacher {teacher_checkpoint}")
    preprocessing = Preprocessing.of(metadata)
    kept, scored = predict_records(model, metadata, local_data_config(metadata), records, progress=progress)
    if len(kept) != len(records):
        raise SoftTargetsError(f"{len(records) - len(kept)} image(s) under {root} are unreadable")
    entries = [{"file": r.path.relative_to(root).as_posix(), "digest": key, "label": r.label,
                "logits": [round(float(v), 5) for v in logits]}
               for r, key, logits in zip(kept, scored.keys, scored.logits, strict=True)]
    described = {"architecture": metadata["architecture"],
                 "weights_sha256": file_digest(checkpoint_files(teacher_checkpoint).weights),
                 "input_size": preprocessing.input_size, "intensity_normalization": preprocessing.intensity,
                 "border_crop": preprocessing.border_crop, "about": about}
    atomic_write_json(out, {"format": SOFT_TARGETS_FORMAT, "class_names": list(CLASS_NAMES), "teacher": described,
                            "entries": entries})
    return read_soft_targets(out)


def read_soft_targets(path: str | Path) -> SoftTargets:
    """Read and check a soft-target file; any shape but the one :func:`write_soft_targets` writes is refused."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise SoftTargetsError(f"soft-target file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SoftTargetsError(f"soft-target file {path} is not readable JSON ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != SOFT_TARGETS_FORMAT:
        raise SoftTargetsError(f"{path} is not a soft-target file (format {SOFT_TARGETS_FORMAT!r} expected)")
    if payload.get("class_names") != list(CLASS_NAMES):
        raise SoftTargetsError(f"{path} was made for the classes {payload.get('class_names')}, not {list(CLASS_NAMES)}")
    teacher = payload.get("teacher")
    try:
        Preprocessing.of(teacher)
        entries = tuple(parse_entry(entry) for entry in payload["entries"])
    except (KeyError, TypeError, ValueError) as error:
        raise SoftTargetsError(f"soft-target file {path} is malformed ({type(error).__name__}: {error})") from None
    if not entries:
        raise SoftTargetsError(f"soft-target file {path} lists no images")
    check_repeats(path, entries)
    return SoftTargets(path, teacher, entries)


def check_repeats(path: Path, entries: tuple[SoftTargetEntry, ...]) -> None:
    """A file listed twice is refused; the same bytes under two names (a film copied in the data set, as the
    Kermany train folder has) are one image and must carry one set of logits."""
    by_file: set[str] = set()
    by_digest: dict[str, SoftTargetEntry] = {}
    for entry in entries:
        if entry.file in by_file:
            raise SoftTargetsError(f"soft-target file {path} lists {entry.file} twice")
        by_file.add(entry.file)
        first = by_digest.setdefault(entry.digest, entry)
        if not np.allclose(first.logits, entry.logits, rtol=0.0, atol=LOGIT_TOLERANCE):
            raise SoftTargetsError(f"soft-target file {path} gives {first.file} and {entry.file}, the same image, "
                                   f"different logits ({first.logits} against {entry.logits})")


def parse_entry(entry: dict[str, Any]) -> SoftTargetEntry:
    logits = tuple(float(v) for v in entry["logits"])
    label = entry["label"]
    digest = str(entry["digest"])
    if len(logits) != len(CLASS_NAMES) or not all(math.isfinite(v) for v in logits):
        raise ValueError(f"logits of {entry['file']} are not {len(CLASS_NAMES)} finite numbers")
    if label not in range(len(CLASS_NAMES)) or isinstance(label, bool):
        raise ValueError(f"label of {entry['file']} is {label!r}")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"digest of {entry['file']} is not a SHA-256")
    return SoftTargetEntry(str(entry["file"]), digest, label, (logits[0], logits[1]))

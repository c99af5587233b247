"""Patient identity from Kermany file names, so that no patient is split across train and validation.

``person1_bacteria_1.jpeg`` / ``person1_virus_7.jpeg`` are pneumonia images of patient 1;
``IM-0115-0001.jpeg`` and ``NORMAL2-IM-0115-0001.jpeg`` are normal images of patient 0115. The
published set also has extra numeric suffixes (``IM-0429-0001-0002.jpeg``, ``person447_virus_921_1.jpeg``),
which belong to the same patient as the name without them. The two normal spellings (with and without
``NORMAL2-``) are merged into one patient: if they are different people we lose a little split freedom,
if they are the same person we avoid a leak — the safe side.
"""

from __future__ import annotations

import re
from pathlib import Path

_PNEUMONIA = re.compile(r"^person(\d+)_(?:bacteria|virus)_\d+(?:_\d+)*$", re.IGNORECASE)
_NORMAL = re.compile(r"^(?:NORMAL2-)?IM-(\d+)-\d+(?:-\d+)*$", re.IGNORECASE)


def patient_id(path: str | Path) -> str | None:
    """The patient a file belongs to, or ``None`` when the name follows no known pattern."""
    stem = Path(path).stem
    if match := _PNEUMONIA.match(stem):
        return f"person{int(match.group(1))}"
    if match := _NORMAL.match(stem):
        return f"IM-{int(match.group(1)):04d}"
    return None


def patient_or_file_id(path: str | Path) -> str:
    """Unknown names count as their own patient (one image each), so foreign data still splits."""
    return patient_id(path) or f"file:{Path(path).name}"

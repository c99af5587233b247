"""``cxrdistill data audit``: what is in a data folder, and what is wrong with it, before training on it.

Reports counts per split and class, unreadable files (listed, never fatal), non-image files, exact
duplicates (same bytes), near duplicates (same picture re-encoded or resized: a 64-bit difference hash
within a small Hamming distance, confirmed by near-identical 32x32 thumbnails), patients that appear in
more than one split folder, image size statistics and, unless turned off, a shortcut audit: how well
trivial image statistics predict the label (:mod:`cxrdistill.data.shortcuts`), also on external folders.
Every file of ``ROOT`` is decoded once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cxrdistill.config.schema import MAX_BORDER_CROP
from cxrdistill.data.io import UnreadableImageError, is_image_file, read_grey
from cxrdistill.data.layout import CLASS_NAMES, DatasetLayoutError, ImageRecord, find_class_folders, scan_dataset
from cxrdistill.data.shortcut_outputs import write_shortcut_outputs
from cxrdistill.data.shortcuts import FeatureTable, collect_features, shortcut_report
from cxrdistill.data.splits import patients_in_several_splits
from cxrdistill.errors import InvalidArgumentError
from cxrdistill.files import file_digest

NEAR_DUPLICATE_BITS = 4
"""Two images whose 64-bit difference hashes differ in at most this many bits are near-duplicate candidates."""
NEAR_DUPLICATE_CORRELATION = 0.997
"""A candidate pair is a near duplicate when its normalised 32x32 thumbnails correlate at least this much.

Chest films share one layout, so the 64-bit hash alone matches many different films (on the real
training set, about 5% of random pairs are within 4 bits). Re-encoded or resized copies correlate
above 0.999; different films, even of one patient, stay below 0.995.
"""
THUMBNAIL_SIDE = 32


@dataclass
class AuditReport:
    root: str
    counts: dict[str, dict[str, int]]
    patients: dict[str, dict[str, int]] = field(default_factory=dict)
    """Distinct patients per split folder and class (what a patient-wise split divides)."""
    unreadable: list[dict[str, str]] = field(default_factory=list)
    non_image_files: list[str] = field(default_factory=list)
    exact_duplicates: list[list[str]] = field(default_factory=list)
    near_duplicates: list[list[str]] = field(default_factory=list)
    patients_in_several_splits: dict[str, list[str]] = field(default_factory=dict)
    unparsed_patient_names: int = 0
    size_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    shortcuts: dict | None = None
    """The shortcut audit (:class:`~cxrdistill.data.shortcuts.ShortcutReport` as a dict), when it was run."""

    def as_dict(self) -> dict:
        return asdict(self)


def difference_hash(grey: np.ndarray) -> int:
    """64-bit dHash: signs of horizontal gradients on a 9x8 thumbnail; robust to re-encoding and resizing."""
    small = np.asarray(Image.fromarray(grey).resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def thumbnail(grey: np.ndarray) -> np.ndarray:
    """The image as a 32x32 thumbnail with zero mean and unit norm: a dot product of two is their correlation."""
    small = np.asarray(Image.fromarray(grey).resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR),
                       dtype=np.float32).ravel()
    small = small - small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 0 else small


def near_duplicate_groups(
    hashes: list[int],
    names: list[str],
    max_bits: int,
    thumbnails: np.ndarray | None = None,
    min_correlation: float = NEAR_DUPLICATE_CORRELATION,
) -> list[list[str]]:
    """Connected groups of images whose hashes are within ``max_bits``; chunked so memory stays small.

    With ``thumbnails`` (one :func:`thumbnail` per hash), a pair within ``max_bits`` only counts when its
    thumbnails also correlate at least ``min_correlation``.
    """
    if len(hashes) < 2:
        return []
    values = np.array(hashes, dtype=np.uint64)
    parent = list(range(len(values)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    chunk = 512
    for start in range(0, len(values), chunk):
        block = values[start : start + chunk, None] ^ values[None, :]
        distance = np.unpackbits(block.view(np.uint8), axis=1).reshape(block.shape[0], len(values), 64).sum(2)
        rows, cols = np.nonzero(distance <= max_bits)
        rows += start
        pair = rows < cols
        rows, cols = rows[pair], cols[pair]
        if thumbnails is not None and len(rows):
            # Gathered in slices: a coarse hash can make candidates of a large share of all pairs.
            correlation = np.concatenate([
                np.einsum("ij,ij->i", thumbnails[rows[i : i + 4096]], thumbnails[cols[i : i + 4096]])
                for i in range(0, len(rows), 4096)
            ])
            rows, cols = rows[correlation >= min_correlation], cols[correlation >= min_correlation]
        for r, c in zip(rows, cols, strict=True):
            parent[find(r)] = find(c)
    groups: dict[int, list[str]] = defaultdict(list)
    for i, name in enumerate(names):
        groups[find(i)].append(name)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def _file_mode(path: Path) -> str:
    """PIL's mode of an image file, or ``DICOM`` (which PIL cannot open; read_grey reads it with pydicom)."""
    if path.suffix.lower() == ".dcm":
        return "DICOM"
    with Image.open(path) as image:
        return image.mode


def external_records(folders: Sequence[str | Path]) -> dict[str, list[ImageRecord]]:
    """Each external set's images by folder name: a bare class folder whole, or a root's ``test/`` folder (as
    evaluation reads it). Checked before anything is decoded."""
    sets: dict[str, list[ImageRecord]] = {}
    for folder in map(Path, folders):
        if folder.name in sets:
            raise InvalidArgumentError(f"two external sets are both called {folder.name!r}; give them distinct "
                                       f"folder names")
        found = scan_dataset(folder)
        if "" not in found and "test" not in found:
            raise DatasetLayoutError(f"external set {folder} has no NORMAL/ and PNEUMONIA/ folders and no test/ "
                                     f"folder")
        sets[folder.name] = found.get("", found.get("test", []))
    return sets


def audit_dataset(
    root: str | Path, progress: bool = True, near_bits: int = NEAR_DUPLICATE_BITS, shortcuts: bool = True,
    external: Sequence[str | Path] = (), out_dir: str | Path | None = None, border_crop: float = 0.0,
) -> AuditReport:
    """Audit ``root``; with ``shortcuts`` also score trivial cues (and on each ``external`` folder).

    ``out_dir`` receives the shortcut audit's JSON, Markdown table and figures. ``border_crop``: measure the
    pixel cues on what a model trained with that ``data.border_crop`` sees (does the crop remove them?).
    """
    root = Path(root)
    if not 0.0 <= border_crop < MAX_BORDER_CROP:
        raise InvalidArgumentError(f"--border-crop {border_crop} must be in [0, {MAX_BORDER_CROP})")
    external_sets = external_records(external) if shortcuts else {}
    found = scan_dataset(root)
    report = AuditReport(
        root=str(root),
        counts={split or "(all)": Counter(r.class_name for r in recs) for split, recs in found.items()},
    )
    report.counts = {k: {c: int(v.get(c, 0)) for c in CLASS_NAMES} for k, v in report.counts.items()}
    report.patients = {
        split or "(all)": {c: len({r.patient for r in recs if r.class_name == c}) for c in CLASS_NAMES}
        for split, recs in found.items()
    }
    for split in found:
        folder = root / split if split else root
        for class_folder in (find_class_folders(folder) or {}).values():
            report.non_image_files += [str(p.relative_to(root)) for p in class_folder.rglob("*")
                                       if p.is_file() and not is_image_file(p)]

    records = [r for recs in found.values() for r in recs]
    by_digest: dict[str, list[str]] = defaultdict(list)
    hashes: list[int] = []
    thumbnails: list[np.ndarray] = []
    hashed_names: list[str] = []
    widths: list[int] = []
    heights: list[int] = []
    modes: Counter[str] = Counter()
    tables: dict[str, FeatureTable] = {split: FeatureTable(border_crop=border_crop) for split in found}
    for record in tqdm(records, desc="auditing", disable=not progress, unit="img"):
        name = str(record.path.relative_to(root))
        by_digest[file_digest(record.path)].append(name)
        try:
            grey = read_grey(record.path)
        except UnreadableImageError as error:
            report.unreadable.append({"file": name, "reason": error.reason})
            continue
        modes[_file_mode(record.path)] += 1
        heights.append(grey.shape[0])
        widths.append(grey.shape[1])
        hashes.append(difference_hash(grey))
        thumbnails.append(thumbnail(grey))
        hashed_names.append(name)
        if shortcuts:
            tables[record.source].add(record, grey)

    report.exact_duplicates = sorted(sorted(names) for names in by_digest.values() if len(names) > 1)
    exact = {name for group in report.exact_duplicates for name in group[1:]}
    keep = [i for i, name in enumerate(hashed_names) if name not in exact]
    report.near_duplicates = near_duplicate_groups(
        [hashes[i] for i in keep], [hashed_names[i] for i in keep], near_bits,
        np.array([thumbnails[i] for i in keep], dtype=np.float32).reshape(len(keep), THUMBNAIL_SIDE**2),
    )

    report.patients_in_several_splits = patients_in_several_splits(found)
    report.unparsed_patient_names = sum(r.patient.startswith("file:") for r in records)
    for label, values in (("width", widths), ("height", heights)):
        if values:
            array = np.array(values)
            report.size_stats[label] = {"min": int(array.min()), "median": float(np.median(array)),
                                        "max": int(array.max())}
    report.modes = dict(modes)
    if shortcuts:
        external_tables: dict[str, FeatureTable] = {}
        for name, records in external_sets.items():
            external_tables[name], unreadable = collect_features(records, progress, f"features of {name}",
                                                                 border_crop)
            report.unreadable += unreadable
        scored = shortcut_report(tables, external_tables)
        report.shortcuts = scored.as_dict()
        if out_dir is not None:
            write_shortcut_outputs(scored, tables[scored.fitted_on], Path(out_dir), str(root))
    return report

"""A small fixed sample of the REAL Kermany chest X-rays, shipped inside the package (like scikit-learn's datasets).

The demo trains on it offline, so a fresh machine sees the method work on real films in minutes.
``sample/kermany-sample.zip`` holds a few hundred images drawn by patient from the Kermany train
folder, down-sized to small grey JPEGs and split by patient into ``train/`` and ``test/`` (no patient
in both); the project's own split then carves ``val/`` out of ``train/`` by patient. Its licence and
citation are in ``sample/README.md``. ``scripts/make_sample.py`` rebuilds the archive, byte for byte,
from the shared copy of the data with :func:`build_sample`.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxrdistill.data.layout import CLASS_NAMES, ImageRecord, scan_dataset
from cxrdistill.data.splits import DataSplit, patients_in_several_splits, split_patients
from cxrdistill.errors import CxrDistillError
from cxrdistill.files import atomic_write, atomic_write_text, file_digest

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLE_ARCHIVE = SAMPLE_DIR / "kermany-sample.zip"
SAMPLE_SOFT_TARGETS = SAMPLE_DIR / "teacher-soft-targets.json"
"""Logits for every sample image from a teacher that never saw its patients (scripts/make_sample_teacher.py)."""
SAMPLE_PATIENTS_SPLIT = "sample_patients"
"""The split :func:`without_sample` moves the sample's patients to, so no model trains on them."""
MANIFEST = "SAMPLE.json"
"""Inside the archive: how it was drawn (spec, counts per split and class, patients)."""
CITATION = ("Kermany D, Zhang K, Goldbaum M. Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images "
            "for Classification. Mendeley Data, v2, 2018. doi:10.17632/rscbjbr9sj.2. Licence CC BY 4.0.")
ZIP_DATE = (2018, 1, 6, 0, 0, 0)
"""Fixed member timestamps (the data set's publication date), so a rebuild gives the same bytes."""


class SampleError(CxrDistillError, FileNotFoundError):
    """The bundled sample (or the source folder it is drawn from) is missing or malformed."""


@dataclass(frozen=True)
class SampleSpec:
    images_per_class: int = 320
    """Images drawn per class (whole patients, so a few more at most); balanced, so chance accuracy is 0.5."""
    image_size: int = 96
    """Side of the stored square grey JPEG (InceptionV3 needs at least 75 px)."""
    jpeg_quality: int = 85
    test_fraction: float = 0.25
    seed: int = 0


def draw_patients(records: list[ImageRecord], images_per_class: int, seed: int) -> list[ImageRecord]:
    """Whole patients, in a seeded random order per class, until each class has ``images_per_class`` images."""
    rng = np.random.default_rng(seed)
    by_patient: dict[tuple[int, str], list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_patient[(record.label, record.patient)].append(record)
    chosen: list[ImageRecord] = []
    for label in range(len(CLASS_NAMES)):
        patients = sorted(patient for lab, patient in by_patient if lab == label)
        rng.shuffle(patients)
        count = 0
        for patient in patients:
            if count >= images_per_class:
                break
            images = sorted(by_patient[(label, patient)], key=lambda r: r.path.name)
            chosen += images
            count += len(images)
    return chosen


def encode(path: Path, spec: SampleSpec) -> bytes:
    image = Image.open(path).convert("L").resize((spec.image_size, spec.image_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=spec.jpeg_quality, optimize=True)
    return buffer.getvalue()


def build_sample(source: str | Path, out: str | Path = SAMPLE_ARCHIVE, spec: SampleSpec = SampleSpec()) -> dict:
    """Draw the sample from ``source`` (a Kermany root with ``train/``) and write the zip ``out``; returns its manifest.

    Exact duplicate files are dropped before drawing (the train folder holds some), so no film can sit
    in both the sample's train and test parts under two patients' names.
    """
    found = scan_dataset(source)
    if "train" not in found:
        raise SampleError(f"{source} has no train/ folder to draw the sample from")
    unique: dict[str, ImageRecord] = {}
    for record in sorted(found["train"], key=lambda r: str(r.path)):
        unique.setdefault(file_digest(record.path), record)
    drawn = draw_patients(list(unique.values()), spec.images_per_class, spec.seed)
    splits = split_patients(drawn, {"test": spec.test_fraction}, spec.seed)
    manifest = {"citation": CITATION, "source": "Kermany train folder (chest_xray_224 copy)", "spec": asdict(spec),
                "splits": {name: split_counts(records) for name, records in splits.items()}}
    members = {f"{split}/{r.class_name}/{r.path.name}": encode(r.path, spec)
               for split, records in splits.items() for r in records}
    members[MANIFEST] = json.dumps(manifest, indent=1, sort_keys=True).encode()

    def write(stream) -> None:
        with zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as archive:  # JPEGs do not compress further
            for name in sorted(members):
                archive.writestr(zipfile.ZipInfo(name, ZIP_DATE), members[name])

    atomic_write(out, write)
    return manifest


def split_counts(records: list[ImageRecord]) -> dict[str, dict[str, int]]:
    """Images and patients per class."""
    return {name: {"images": sum(r.label == label for r in records),
                   "patients": len({r.patient for r in records if r.label == label})}
            for label, name in enumerate(CLASS_NAMES)}


def sample_manifest(archive: str | Path = SAMPLE_ARCHIVE) -> dict:
    """The manifest stored in the archive (how the sample was drawn, counts per split, class and patient)."""
    with zipfile.ZipFile(check_archive(archive)) as opened:
        return json.loads(opened.read(MANIFEST))


def check_archive(archive: str | Path) -> Path:
    archive = Path(archive)
    if not archive.is_file():
        raise SampleError(f"the bundled sample {archive} is missing; rebuild it with scripts/make_sample.py "
                          f"or pass --data ROOT")
    return archive


def extract_sample(dest: str | Path, archive: str | Path = SAMPLE_ARCHIVE) -> Path:
    """Unpack the sample to ``dest`` (a Kermany root: ``train/``, ``test/``) unless it is already there intact.

    A marker holding the archive's SHA-256 says the folder is complete; a half-written folder is refilled.
    """
    archive, dest = check_archive(archive), Path(dest)
    marker = dest / ".extracted-from"
    digest = file_digest(archive)
    if marker.is_file() and marker.read_text().strip() == digest:
        return dest
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(dest)  # zipfile drops absolute paths and ".." from member names
    atomic_write_text(dest / "README.md", f"Extracted from {archive}.\n\n{CITATION}\n")
    atomic_write_text(marker, digest + "\n")  # last: the folder is complete
    return dest


def leaked_patients(root: str | Path) -> dict[str, list[str]]:
    """Patients found in more than one split folder of an extracted sample (there should be none)."""
    return patients_in_several_splits(scan_dataset(root))


def without_sample(split: DataSplit, sample_root: str | Path) -> DataSplit:
    """``split`` of the sample's source folder with every patient of the (extracted) sample taken out of train,
    val and test, and every other copy of a sampled film too: a teacher trained on the rest never saw them.

    The sample's files keep their source names (``train/NORMAL/x.jpeg`` comes from the source's
    ``train/NORMAL/x.jpeg``), which gives both their patients and the files whose bytes to look for.
    """
    sampled = [r for records in scan_dataset(sample_root).values() for r in records]
    patients = {r.patient for r in sampled}
    sources = [split.root / "train" / r.class_name / r.path.name for r in sampled]
    if not all(path.is_file() for path in sources):
        raise SampleError(f"{split.root} is not the folder the sample at {sample_root} was drawn from")
    digests = {file_digest(path) for path in sources}
    kept: dict[str, list[ImageRecord]] = {}
    removed: list[ImageRecord] = []
    for name, records in split.splits.items():
        kept[name] = []
        for record in records:
            taken = record.patient in patients or file_digest(record.path) in digests
            (removed if taken else kept[name]).append(record)
    return DataSplit(split.root, {**kept, SAMPLE_PATIENTS_SPLIT: removed})

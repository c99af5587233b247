"""The bundled sample of real X-rays: small, patient-wise, both classes, rebuilt deterministically; the demo uses it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from cxrdistill.data.layout import scan_dataset
from cxrdistill.data.sample import (
    CITATION,
    SAMPLE_ARCHIVE,
    SAMPLE_PATIENTS_SPLIT,
    SampleError,
    SampleSpec,
    build_sample,
    extract_sample,
    leaked_patients,
    sample_manifest,
    without_sample,
)
from cxrdistill.data.splits import make_split
from cxrdistill.experiments.demo import demo_configs


def test_bundled_archive_is_small_patient_wise_and_has_both_classes(tmp_path):
    assert SAMPLE_ARCHIVE.is_file() and SAMPLE_ARCHIVE.stat().st_size <= 2_000_000
    root = extract_sample(tmp_path / "sample")
    found = scan_dataset(root)
    assert set(found) == {"train", "test"}
    assert leaked_patients(root) == {}
    manifest = sample_manifest()
    for split, records in found.items():
        for label, name in enumerate(("NORMAL", "PNEUMONIA")):
            of_class = [r for r in records if r.label == label]
            assert len(of_class) == manifest["splits"][split][name]["images"] > 0
            assert len({r.patient for r in of_class}) == manifest["splits"][split][name]["patients"]
            assert all(not r.patient.startswith("file:") for r in of_class)  # every name carries its patient
    assert len(found["train"]) + len(found["test"]) >= 300
    licence = (SAMPLE_ARCHIVE.parent / "LICENSE").read_text() + (SAMPLE_ARCHIVE.parent / "README.md").read_text()
    assert "CC BY 4.0" in licence and "10.17632/rscbjbr9sj.2" in licence and "10.17632/rscbjbr9sj.2" in CITATION


def test_extraction_is_reused_and_a_damaged_folder_is_refilled(tmp_path):
    root = extract_sample(tmp_path / "sample")
    victim = next((root / "test" / "NORMAL").iterdir())
    victim.unlink()
    assert extract_sample(root) == root and not victim.exists()  # intact marker: left alone
    (root / ".extracted-from").unlink()
    extract_sample(root)
    assert victim.exists()


def test_build_is_deterministic_and_splits_by_patient(synth_root, tmp_path):
    spec = SampleSpec(images_per_class=6, image_size=32, test_fraction=0.3)
    first = build_sample(synth_root, tmp_path / "a.zip", spec)
    build_sample(synth_root, tmp_path / "b.zip", spec)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        archive.extractall(tmp_path / "x")
    assert leaked_patients(tmp_path / "x") == {}
    for split in ("train", "test"):
        assert all(first["splits"][split][c]["images"] > 0 for c in ("NORMAL", "PNEUMONIA"))
    assert sum(first["splits"][s]["NORMAL"]["images"] for s in ("train", "test")) >= 6


@pytest.mark.slow
def test_demo_on_the_sample_uses_the_demo_presets_and_the_teacher_it_hands_on(tmp_path):
    configs = demo_configs(Path("ROOT"), tmp_path, presets="demo")
    assert configs["teacher"].model.name == "inception_v3" and configs["student"].model.name == "alexnet"
    teacher = configs["teacher"]
    assert configs["student_kd"].distill.teacher == str(teacher.run_dir / f"{teacher.train.keep}.safetensors")
    assert configs["student"].distill.teacher is None


def test_a_teacher_for_the_sample_never_sees_its_patients_or_their_films(synth_copy, tmp_path):
    """without_sample: every sample patient leaves train, val and test, and so does a copy of a sampled film that
    the source holds under another patient's name (the Kermany train folder has such duplicates)."""
    spec = SampleSpec(images_per_class=6, image_size=32, test_fraction=0.3)
    build_sample(synth_copy, tmp_path / "s.zip", spec)
    sample_root = extract_sample(tmp_path / "sample", tmp_path / "s.zip")
    sampled = [r for records in scan_dataset(sample_root).values() for r in records]
    copied = synth_copy / "train" / "NORMAL" / "IM-9999-0001.jpeg"
    copied.write_bytes((synth_copy / "train" / sampled[0].class_name / sampled[0].path.name).read_bytes())
    split = without_sample(make_split(synth_copy, 0.15, 0.15, seed=0), sample_root)
    patients = {r.patient for r in sampled}
    for name in ("train", "val", "test"):
        assert split[name] and not {r.patient for r in split[name]} & patients
        assert copied not in [r.path for r in split[name]]
    removed = split[SAMPLE_PATIENTS_SPLIT]
    assert copied in [r.path for r in removed] and {r.patient for r in removed} == patients | {"IM-9999"}
    assert sum(len(records) for records in split.splits.values()) == len(list(synth_copy.rglob("*.jpeg")))
    (synth_copy / "train" / sampled[1].class_name / sampled[1].path.name).unlink()  # no longer its source
    with pytest.raises(SampleError, match="not the folder the sample"):
        without_sample(split, sample_root)

"""The bundled sample of real X-rays: small, patient-wise, both classes, rebuilt deterministically; the demo uses it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from cxrdistill.data.layout import scan_dataset
from cxrdistill.data.sample import (
    CITATION,
    SAMPLE_ARCHIVE,
    SampleSpec,
    build_sample,
    extract_sample,
    leaked_patients,
    sample_manifest,
)
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

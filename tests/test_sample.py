"""The bundled sample of real X-rays: small, patient-wise, both classes, rebuilt deterministically; the demo uses it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from cxrdistill.data.cache import FileHasher
from cxrdistill.data.layout import scan_dataset
from cxrdistill.data.preprocess import Preprocessing
from cxrdistill.data.sample import (
    CITATION,
    SAMPLE_ARCHIVE,
    SAMPLE_PATIENTS_SPLIT,
    SAMPLE_SOFT_TARGETS,
    SampleError,
    SampleSpec,
    build_sample,
    extract_sample,
    leaked_patients,
    sample_manifest,
    without_sample,
)
from cxrdistill.data.splits import make_split
from cxrdistill.distillation.soft_targets import read_soft_targets
from cxrdistill.evaluation.metrics import binary_metrics
from cxrdistill.experiments.demo import demo_configs, run_demo


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


def test_demo_distils_from_the_teacher_it_trains_or_from_the_soft_targets_it_is_given(tmp_path):
    configs = demo_configs(Path("ROOT"), tmp_path, presets="demo", seeds=(0, 1))
    assert list(configs) == ["teacher", "student-s0", "student_kd-s0", "student-s1", "student_kd-s1"]
    assert configs["teacher"].model.name == "inception_v3" and configs["student-s0"].model.name == "alexnet"
    teacher = configs["teacher"]
    assert configs["student_kd-s1"].distill.teacher == str(teacher.run_dir / f"{teacher.train.keep}.safetensors")
    assert configs["student-s1"].distill.teacher is None
    assert [configs[f"student_kd-s{s}"].train.seed for s in (0, 1)] == [0, 1]
    shipped = demo_configs(Path("ROOT"), tmp_path, presets="demo", seeds=(0, 1, 2), teacher=SAMPLE_SOFT_TARGETS)
    assert "teacher" not in shipped and len(shipped) == 6
    assert {c.distill.teacher for n, c in shipped.items() if "kd" in n} == {str(SAMPLE_SOFT_TARGETS)}


def test_the_shipped_soft_targets_cover_the_sample_and_come_from_a_teacher_that_never_saw_it(tmp_path):
    root = extract_sample(tmp_path / "sample")
    table = read_soft_targets(SAMPLE_SOFT_TARGETS)
    found = scan_dataset(root)
    table.check_covers(found["train"], FileHasher(None))  # raises if a training film has no target
    assert len(table.entries) == sum(len(records) for records in found.values())
    assert "none of the sample's patients" in table.teacher["about"]
    assert table.preprocessing == Preprocessing(96)  # the sample's own resolution, no crop or equalising
    test = table.predictions("test")
    metrics = binary_metrics(test.labels, test.prob_positive)
    assert metrics["roc_auc"] > 0.9  # the reason to ship it: a teacher far better than chance on unseen patients
    assert SAMPLE_SOFT_TARGETS.stat().st_size < 200_000


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


@pytest.mark.slow
def test_demo_on_the_sample_reports_the_shipped_teacher_and_the_paired_difference(tmp_path):
    """One epoch a student, two seeds: the rows, not the figures of a real demo run."""
    rows = run_demo(None, tmp_path, progress=False, extra=["train.epochs=1"], seeds=(0, 1))
    by_model = {row["model"]: row for row in rows}
    assert list(by_model) == ["teacher", "student", "student_kd", "distilled - plain"]
    assert "shipped soft targets" in by_model["teacher"]["how"] and by_model["teacher"]["roc_auc"] > 0.9
    assert not (tmp_path / "teacher").exists() and (tmp_path / "student_kd-s1" / "evaluation.json").is_file()
    difference = by_model["distilled - plain"]["accuracy"]
    assert difference.value == pytest.approx(by_model["student_kd"]["accuracy"] - by_model["student"]["accuracy"])
    assert difference.low <= difference.value <= difference.high
    assert by_model["student"]["seeds"] == 2 and {row["images"] for row in rows} == {160}
    assert "distilled - plain" in (tmp_path / "demo.md").read_text()

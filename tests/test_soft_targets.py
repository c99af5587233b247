"""Soft-target files: a teacher's logits shipped without the teacher. They must give a student exactly what the
teacher's own cache gives, be refused when they do not cover the training images or do not parse, and work end
to end in a distillation run."""

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from test_ensemble_teacher import tiny_teacher

from cxrdistill.config import ConfigError
from cxrdistill.data.dataset import build_dataset, resolve_split
from cxrdistill.data.layout import ImageRecord
from cxrdistill.distillation.objective import data_image_size
from cxrdistill.distillation.soft_targets import SoftTargetsError, read_soft_targets, write_soft_targets
from cxrdistill.distillation.teacher import LoadedTeacher, make_teacher_source
from cxrdistill.evaluation.predict import predict
from cxrdistill.experiments.run import run_experiment
from cxrdistill.runtime.checkpoint import read_metadata
from cxrdistill.runtime.device import resolve_precision

CPU = resolve_precision(torch.device("cpu"), "off")


@pytest.fixture(scope="module")
def shipped(synth_root, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny teacher at 40 px and the soft targets it wrote for every image of the synthetic set."""
    folder = tmp_path_factory.mktemp("shipped")
    teacher = tiny_teacher(folder, "teacher", "resnet18", 40, seed=0)
    return teacher, write_soft_targets(teacher, synth_root, folder / "targets.json", "a test teacher",
                                       progress=False).path


def test_shipped_targets_are_what_the_teachers_own_cache_gives(synth_root, shipped, tmp_path):
    teacher, targets = shipped
    config = tiny_config(synth_root, tmp_path, "data.augment=false")
    records = resolve_split(config.data, synth_root)["train"]
    from_teacher = make_teacher_source("cached", [LoadedTeacher(teacher, CPU)], records, config.data, CPU, 1.0,
                                       progress=False)
    from_file = make_teacher_source("cached", [read_soft_targets(targets)], records, config.data, CPU, 1.0,
                                    progress=False)
    keys = build_dataset(records, config.data, 40, augment=False, progress=False).keys
    assert len(keys) == len(records) > 10
    assert torch.allclose(from_file.logits(None, keys), from_teacher.logits(None, keys), atol=1e-4)
    assert not torch.allclose(from_file.logits(None, keys)[:, 0], from_file.logits(None, keys)[:, 1])


def test_shipped_targets_record_the_teacher_and_score_a_folder(synth_root, shipped):
    teacher, targets = shipped
    table = read_soft_targets(targets)
    assert table.teacher["architecture"] == "resnet18" and table.teacher["about"] == "a test teacher"
    assert table.preprocessing.input_size == 40
    assert len(table.entries) == len(list(synth_root.rglob("*.jpeg")))
    test = table.predictions("test")
    assert len(test.keys) == len(list((synth_root / "test").rglob("*.jpeg")))
    assert set(test.labels.tolist()) == {0, 1}
    with pytest.raises(SoftTargetsError, match="no images under val/"):
        table.predictions("val")


def test_targets_for_other_images_are_refused_before_training(synth_copy, shipped, tmp_path):
    _, targets = shipped
    records = resolve_split(tiny_config(synth_copy, tmp_path).data, synth_copy)["train"]
    extra = synth_copy / "train" / "NORMAL" / "new-patient-0001.jpeg"
    extra.write_bytes(records[0].path.read_bytes() + b"\0")  # same picture, other bytes: never scored
    records.append(ImageRecord(extra, records[0].label, "new-patient", "train"))
    config = tiny_config(synth_copy, tmp_path)
    with pytest.raises(SoftTargetsError, match=r"have no entry for 1 of the \d+ training images .*new-patient"):
        make_teacher_source("cached", [read_soft_targets(targets)], records, config.data, CPU, 1.0, progress=False)


@pytest.mark.parametrize("damage, message", [
    (lambda p: "not json", "not readable JSON"),
    (lambda p: {**p, "format": "cxrdistill-teacher-logits/1"}, "not a soft-target file"),
    (lambda p: {**p, "class_names": ["PNEUMONIA", "NORMAL"]}, "made for the classes"),
    (lambda p: {**p, "entries": [{**p["entries"][0], "logits": [0.1, float("nan")]}]}, "not 2 finite numbers"),
    (lambda p: {**p, "entries": [{**p["entries"][0], "label": True}]}, "label of"),
    (lambda p: {**p, "entries": [{**p["entries"][0], "digest": "../../etc"}]}, "not a SHA-256"),
    (lambda p: {**p, "entries": []}, "lists no images"),
    (lambda p: {**p, "entries": p["entries"][:1] * 2}, r"lists \S+ twice"),
    (lambda p: {**p, "entries": [p["entries"][0], {**p["entries"][1], "digest": p["entries"][0]["digest"]}]},
     "the same image, different logits"),
    (lambda p: {**p, "teacher": {**p["teacher"], "border_crop": 0.6}}, "malformed"),
    (lambda p: {k: v for k, v in p.items() if k != "entries"}, "malformed"),
])
def test_a_damaged_or_foreign_file_is_refused(shipped, tmp_path, damage, message):
    payload = json.loads(shipped[1].read_text())
    damaged = tmp_path / "damaged.json"
    changed = damage(payload)
    damaged.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(SoftTargetsError, match=message):
        read_soft_targets(damaged)


def test_a_film_copied_under_another_name_is_one_image(synth_copy, tmp_path):
    """Data sets hold copies (the Kermany train folder holds 26 copies): the file lists both, the table one key."""
    original = next((synth_copy / "train" / "NORMAL").glob("*.jpeg"))
    copy = original.with_name("copied-film.jpeg")
    copy.write_bytes(original.read_bytes())
    teacher = tiny_teacher(tmp_path, "teacher", "resnet18", 40, seed=0)
    table = write_soft_targets(teacher, synth_copy, tmp_path / "targets.json", "copies", progress=False)
    files = {entry.file: entry for entry in table.entries}
    pair = [files[p.relative_to(synth_copy).as_posix()] for p in (original, copy)]
    assert pair[0].digest == pair[1].digest and pair[0].logits == pair[1].logits
    assert len(table.table) == len(table.entries) - 1


def test_an_online_teacher_cannot_be_a_file(synth_root, shipped, tmp_path):
    """Online KD decodes at the file's recorded size (no network is read for it), then refuses the file."""
    config = tiny_config(synth_root, tmp_path, f"distill.teacher={shipped[1]}", "distill.teacher_outputs=online")
    assert data_image_size(config, 32) == 40
    records = resolve_split(config.data, synth_root)["train"]
    with pytest.raises(ConfigError, match="is a soft-target file.*teacher_outputs=cached"):
        make_teacher_source("online", [read_soft_targets(shipped[1])], records, config.data, CPU, 1.0, progress=False)


def test_targets_made_with_other_preprocessing_are_refused(synth_root, shipped, tmp_path):
    config = tiny_config(synth_root, tmp_path, f"distill.teacher={shipped[1]}", "data.border_crop=0.1")
    with pytest.raises(ConfigError, match="preprocesses differently: border_crop 0.0 \\(teacher\\) against 0.1"):
        run_experiment(config, progress=False)


@pytest.mark.slow
def test_a_student_distils_from_a_soft_target_file(synth_root, shipped, tmp_path):
    """End to end; the targets are shown to be used: a student pulled to the teacher's outputs (alpha 1) by
    many steps ends closer to the teacher's predictions than the same student trained on the labels."""
    teacher, targets = shipped
    runs = {}
    for name, extra in {"kd": [f"distill.teacher={targets}", "distill.alpha=1.0"], "plain": []}.items():
        config = tiny_config(synth_root, tmp_path, f"name={name}", "data.image_size=40", "train.epochs=4",
                             "data.augment=false", "train.keep=last", *extra)
        runs[name] = run_experiment(config, progress=False).final_checkpoint
    assert read_metadata(runs["kd"])["config"]["distill"]["teacher"] == str(targets)
    config = tiny_config(synth_root, tmp_path, "data.augment=false")
    records = resolve_split(config.data, synth_root)["train"]
    loader = torch.utils.data.DataLoader(build_dataset(records, config.data, 40, augment=False, progress=False),
                                         batch_size=16)
    teacher_p = predict(LoadedTeacher(teacher, CPU).model, loader, CPU).prob_positive
    gaps = {name: abs(predict(LoadedTeacher(path, CPU).model, loader, CPU).prob_positive - teacher_p).mean()
            for name, path in runs.items()}
    assert gaps["kd"] < gaps["plain"]


def test_the_cli_writes_a_file_a_student_can_name(synth_root, shipped, tmp_path):
    from typer.testing import CliRunner

    from cxrdistill.cli import app

    out = tmp_path / "cli.json"
    result = CliRunner().invoke(app, ["soft-targets", str(shipped[0]), str(synth_root), "--out", str(out), "--quiet",
                                      "--about", "seed 0"])
    assert result.exit_code == 0, result.output
    assert f"logits of {len(list(synth_root.rglob('*.jpeg')))} images from resnet18 at 40 px" in result.output
    assert read_soft_targets(out).entries == read_soft_targets(shipped[1]).entries
    missing = CliRunner().invoke(app, ["soft-targets", str(tmp_path / "none.safetensors"), str(synth_root)])
    assert missing.exit_code == 2 and "does not exist" in missing.output

"""Ensemble teachers: the soft target is the mean of the members' tempered probabilities, cached == online,
the list form of ``distill.teacher`` is validated, and a student distils from an ensemble end to end."""

from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from cxrdistill.config import ConfigError, ExperimentConfig, ModelConfig, load_config
from cxrdistill.data.dataset import build_dataset, resolve_split
from cxrdistill.distillation.objective import data_image_size
from cxrdistill.distillation.teacher import TEACHER_SOURCES, EnsembleTeacher, LoadedTeacher, make_teacher_source
from cxrdistill.evaluation.predict import resize_batch
from cxrdistill.experiments.run import run_experiment
from cxrdistill.models import create_model
from cxrdistill.registry import UnknownNameError
from cxrdistill.runtime.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint
from cxrdistill.runtime.device import resolve_precision

CPU = resolve_precision(torch.device("cpu"), "off")
TEMPERATURE = 3.0


def tiny_teacher(folder: Path, name: str, architecture: str, size: int, seed: int) -> Path:
    """An untrained (seeded) checkpoint: its outputs differ from another member's, which is all the mean needs."""
    torch.manual_seed(seed)
    config = ExperimentConfig(model=ModelConfig(name=architecture))
    model = create_model(config.model, image_size=size)
    head = [module for module in model.modules() if isinstance(module, torch.nn.Linear)][-1]
    with torch.no_grad():  # members lean to different classes: their mean is neither's output
        head.bias.copy_(torch.tensor([2.0, -2.0]) * (-1) ** seed * (1 + seed))
    return save_checkpoint(folder / f"{name}.safetensors", model, checkpoint_metadata(config, size))


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("members")
    return [tiny_teacher(folder, "a", "resnet18", 40, seed=0), tiny_teacher(folder, "b", "mobilenet_v3_small", 40, 1)]


def test_ensemble_target_is_the_mean_of_member_probabilities(members):
    teachers = [LoadedTeacher(path, CPU) for path in members]
    source = make_teacher_source("online", teachers, [], None, CPU, TEMPERATURE)
    assert isinstance(source, EnsembleTeacher)
    images = torch.randn(4, 3, 56, 56)  # decoded larger than the members: each resizes to its own 40 px
    with torch.no_grad():
        member_probs = [torch.softmax(t.model(resize_batch(images, 40)) / TEMPERATURE, dim=1) for t in teachers]
    expected = (member_probs[0] + member_probs[1]) / 2
    assert (member_probs[0][:, 0] > 0.6).all() and (member_probs[1][:, 0] < 0.4).all()
    assert torch.allclose(torch.softmax(source.logits(images, []) / TEMPERATURE, dim=1), expected, atol=1e-5)


def test_one_teacher_is_not_wrapped(members):
    source = make_teacher_source("online", [LoadedTeacher(members[0], CPU)], [], None, CPU, TEMPERATURE)
    assert not isinstance(source, EnsembleTeacher)
    with pytest.raises(UnknownNameError, match="unknown distill.teacher_outputs 'live'; known: cached, online"):
        make_teacher_source("live", [LoadedTeacher(members[0], CPU)], [], None, CPU, TEMPERATURE)
    assert TEACHER_SOURCES.names() == ["cached", "online"]


def test_cached_ensemble_equals_online_on_unaugmented_images(synth_root, members, tmp_path):
    config = tiny_config(synth_root, tmp_path, "data.augment=false")
    records = resolve_split(config.data, synth_root)["train"]
    teachers = [LoadedTeacher(path, CPU) for path in members]
    cached = make_teacher_source("cached", teachers, records, config.data, CPU, TEMPERATURE, progress=False)
    online = make_teacher_source("online", teachers, records, config.data, CPU, TEMPERATURE, progress=False)
    assert cached.clean_targets and not online.clean_targets  # mixup blends a cache's targets, not online ones
    dataset = build_dataset(records, config.data, 40, augment=False, progress=False)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(6)])
    assert torch.allclose(cached.logits(batch["image"], batch["key"]), online.logits(batch["image"], batch["key"]),
                          atol=1e-4)
    # each member keeps its own cache, keyed by its checkpoint's hash
    assert len(list((tmp_path / "cache" / "teacher-logits").glob("*.pt"))) == 2


def test_list_form_of_distill_teacher_is_validated(members):
    listed = load_config(None, [f"distill.teacher=[{members[0]}, {members[1]}]"])
    assert listed.distill.teachers == [str(members[0]), str(members[1])]
    assert load_config(None, ["distill.teacher=a.safetensors"]).distill.teachers == ["a.safetensors"]
    assert load_config(None).distill.teachers == []
    with pytest.raises(ConfigError, match="empty list names no teacher"):
        load_config(None, ["distill.teacher=[]"])
    with pytest.raises(ConfigError, match="names a checkpoint twice"):
        load_config(None, ["distill.teacher=[a.safetensors, a.safetensors]"])
    with pytest.raises(ConfigError, match="distill.teacher: expected text"):
        load_config(None, ["distill.teacher=[a.safetensors, {b: 1}]"])


def test_online_ensemble_decodes_at_the_largest_member_size(synth_root, members, tmp_path):
    bigger = tiny_teacher(tmp_path, "c", "resnet18", 48, seed=2)
    config = tiny_config(synth_root, tmp_path, f"distill.teacher=[{members[0]}, {bigger}]",
                         "distill.teacher_outputs=online")
    assert data_image_size(config, 32) == 48


def test_student_distils_from_a_cached_ensemble(synth_root, members, tmp_path):
    config = tiny_config(synth_root, tmp_path, f"distill.teacher=[{members[0]}, {members[1]}]", "train.epochs=1",
                         f"distill.temperature={TEMPERATURE}")
    result = run_experiment(config, progress=False)
    saved = load_checkpoint(result.best_checkpoint)["metadata"]["config"]["distill"]["teacher"]
    assert saved == [str(members[0]), str(members[1])]

"""Knowledge distillation: the KD loss by hand, T^2 scaling, teacher-logit cache, online vs cached, bad input."""

import math

import pytest
import torch
from conftest import tiny_config

from cxrdistill.config import DistillConfig
from cxrdistill.data.dataset import build_dataset, resolve_split
from cxrdistill.distillation import teacher as teacher_module
from cxrdistill.distillation.losses import (
    DISTILLATION_LOSSES,
    DistillationSettingError,
    build_distillation_loss,
)
from cxrdistill.distillation.teacher import LoadedTeacher, OnlineTeacher, build_cached_teacher
from cxrdistill.training.checkpoint import CheckpointError, load_checkpoint
from cxrdistill.training.device import resolve_precision
from cxrdistill.training.run import run_experiment

CPU = resolve_precision(torch.device("cpu"), "off")


def kd(temperature=1.0, alpha=1.0, scale=True):
    return build_distillation_loss(DistillConfig(temperature=temperature, alpha=alpha, scale_by_t2=scale))


def test_kd_loss_matches_a_hand_computation():
    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0]])
    t = 2.0
    # softmax([0, 0.5]) for the teacher, softmax([0.5, 0]) for the student
    p_t = [1 / (1 + math.exp(0.5)), math.exp(0.5) / (1 + math.exp(0.5))]
    p_s = [p_t[1], p_t[0]]
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
    hard = torch.tensor(0.7)
    assert kd(t, alpha=1.0, scale=False)(student, teacher, hard).item() == pytest.approx(kl, rel=1e-5)
    assert kd(t, alpha=1.0, scale=True)(student, teacher, hard).item() == pytest.approx(kl * t * t, rel=1e-5)
    mixed = kd(t, alpha=0.25, scale=True)(student, teacher, hard).item()
    assert mixed == pytest.approx(0.25 * kl * t * t + 0.75 * 0.7, rel=1e-5)


def test_kl_is_per_sample_not_per_element():
    """batchmean: a batch of identical rows has the loss of one row (not divided by the class count)."""
    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0]])
    one = kd(alpha=1.0)(student, teacher, torch.tensor(0.0))
    four = kd(alpha=1.0)(student.repeat(4, 1), teacher.repeat(4, 1), torch.tensor(0.0))
    assert four.item() == pytest.approx(one.item())


def test_alpha_zero_is_plain_cross_entropy():
    logits = torch.randn(5, 2)
    labels = torch.tensor([0, 1, 1, 0, 1])
    hard = torch.nn.functional.cross_entropy(logits, labels)
    assert kd(10.0, alpha=0.0)(logits, torch.randn(5, 2), hard).item() == pytest.approx(hard.item())


def soft_gradient_norm(temperature: float, scale: bool) -> float:
    torch.manual_seed(0)
    student = torch.randn(64, 2, requires_grad=True)
    teacher = torch.randn(64, 2)
    kd(temperature, alpha=1.0, scale=scale)(student, teacher, torch.tensor(0.0)).backward()
    return student.grad.norm().item()


def test_t_squared_keeps_the_gradient_scale_across_temperatures():
    scaled = [soft_gradient_norm(t, True) for t in (10, 20, 40)]
    unscaled = [soft_gradient_norm(t, False) for t in (10, 20, 40)]
    assert max(scaled) / min(scaled) < 1.1  # stable with T^2
    assert unscaled[0] / unscaled[2] > 10  # falls as 1/T^2 without it (16x from T=10 to 40)


@pytest.mark.parametrize(("setting", "message"), [({"temperature": 0.0}, "temperature must be > 0"),
                                                  ({"temperature": -1.0}, "temperature must be > 0"),
                                                  ({"alpha": 1.5}, r"alpha must be within \[0, 1\]"),
                                                  ({"alpha": -0.1}, r"alpha must be within \[0, 1\]")])
def test_invalid_settings_are_refused(setting, message):
    with pytest.raises(DistillationSettingError, match=message):
        build_distillation_loss(DistillConfig(**setting))


def test_losses_are_looked_up_by_name():
    assert "kd" in DISTILLATION_LOSSES
    with pytest.raises(KeyError, match="unknown distillation loss 'fitnet'"):
        build_distillation_loss(DistillConfig(loss="fitnet"))


@pytest.fixture(scope="module")
def trained_teacher(synth_root, tmp_path_factory):
    """A ResNet18 teacher at 40 px (another size than the 32-px students), one epoch."""
    workdir = tmp_path_factory.mktemp("teacher")
    config = tiny_config(synth_root, workdir, "name=teacher", "train.epochs=1", "data.image_size=40")
    return run_experiment(config, progress=False).best_checkpoint, workdir


def count_predict_calls(monkeypatch):
    calls = []
    original = teacher_module.predict

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(teacher_module, "predict", counting)
    return calls


def test_teacher_cache_is_reused_and_invalidated_by_a_new_teacher(synth_root, trained_teacher, tmp_path, monkeypatch):
    checkpoint, _ = trained_teacher
    config = tiny_config(synth_root, tmp_path)
    records = resolve_split(config.data, synth_root)["train"]
    teacher = LoadedTeacher(checkpoint, CPU)
    calls = count_predict_calls(monkeypatch)
    cached, path, computed = build_cached_teacher(teacher, records, config.data, CPU, progress=False)
    assert computed == len(records) and path.is_file() and len(calls) == 1
    again, same_path, computed_again = build_cached_teacher(teacher, records, config.data, CPU, progress=False)
    assert computed_again == 0 and same_path == path and len(calls) == 1  # the teacher did not run again
    assert all(torch.equal(cached.table[k], again.table[k]) for k in cached.table)

    # A different teacher checkpoint (another file hash) never reuses these soft targets.
    changed = tmp_path / "teacher2.pt"
    payload = load_checkpoint(checkpoint)
    payload["model_state"]["fc.bias"] += 1.0
    torch.save(payload, changed)
    _, other_path, computed_other = build_cached_teacher(LoadedTeacher(changed, CPU), records, config.data, CPU,
                                                         progress=False)
    assert other_path != path and computed_other == len(records)


def test_damaged_cache_is_rebuilt_with_a_message(synth_root, trained_teacher, tmp_path, capsys):
    checkpoint, _ = trained_teacher
    config = tiny_config(synth_root, tmp_path)
    records = resolve_split(config.data, synth_root)["train"]
    teacher = LoadedTeacher(checkpoint, CPU)
    _, path, _ = build_cached_teacher(teacher, records, config.data, CPU, progress=False)
    path.write_bytes(b"garbage")
    _, _, computed = build_cached_teacher(teacher, records, config.data, CPU, progress=False)
    assert computed == len(records) and "rebuilding" in capsys.readouterr().out


def test_online_and_cached_agree_without_augmentation(synth_root, trained_teacher, tmp_path):
    checkpoint, _ = trained_teacher
    config = tiny_config(synth_root, tmp_path, "data.augment=false")
    records = resolve_split(config.data, synth_root)["train"]
    teacher = LoadedTeacher(checkpoint, CPU)
    cached, _, _ = build_cached_teacher(teacher, records, config.data, CPU, progress=False)
    dataset = build_dataset(records, config.data, teacher.input_size, augment=False, progress=False)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(6)])
    online = OnlineTeacher(teacher, CPU).logits(batch["image"], batch["key"])
    assert torch.allclose(online, cached.logits(batch["image"], batch["key"]), atol=1e-5)


@pytest.mark.parametrize("mode", ["cached", "online"])
def test_distilled_training_runs_with_all_trainer_features(synth_root, trained_teacher, tmp_path, mode):
    checkpoint, _ = trained_teacher
    config = tiny_config(synth_root, tmp_path, f"distill.teacher={checkpoint}", f"distill.teacher_outputs={mode}",
                         "distill.temperature=4", "train.epochs=1")
    result = run_experiment(config, progress=False)
    assert load_checkpoint(result.best_checkpoint)["metadata"]["config"]["distill"]["teacher_outputs"] == mode
    resumed = run_experiment(tiny_config(synth_root, tmp_path, f"distill.teacher={checkpoint}",
                                         f"distill.teacher_outputs={mode}", "distill.temperature=4",
                                         "train.epochs=2"), resume=True,
                             progress=False)
    assert resumed.state.epoch == 2


def test_teacher_with_another_label_order_is_refused(synth_root, trained_teacher, tmp_path):
    checkpoint, _ = trained_teacher
    payload = load_checkpoint(checkpoint)
    payload["metadata"]["class_names"] = ["PNEUMONIA", "NORMAL"]
    swapped = tmp_path / "swapped.pt"
    torch.save(payload, swapped)
    config = tiny_config(synth_root, tmp_path, f"distill.teacher={swapped}")
    with pytest.raises(CheckpointError, match="would be misread"):
        run_experiment(config, progress=False)

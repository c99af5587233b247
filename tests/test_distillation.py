"""Knowledge distillation: the KD loss by hand (class weights included), T^2 scaling, teacher-logit cache,
online vs cached, bad input."""

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
from cxrdistill.distillation.objective import DistillationObjective
from cxrdistill.distillation.teacher import CachedTeacher, LoadedTeacher, OnlineTeacher, build_cached_teacher
from cxrdistill.experiments.run import run_experiment
from cxrdistill.runtime.checkpoint import CheckpointError, load_checkpoint, save_weights
from cxrdistill.runtime.device import resolve_precision
from cxrdistill.training.objectives import SupervisedObjective, class_weights

CPU = resolve_precision(torch.device("cpu"), "off")


def kd(temperature=1.0, alpha=1.0, scale=True):
    return build_distillation_loss(DistillConfig(temperature=temperature, alpha=alpha, scale_by_t2=scale))


def softmax(logits: list[float], temperature: float) -> list[float]:
    exps = [math.exp(z / temperature) for z in logits]
    return [e / sum(exps) for e in exps]


def kl_by_hand(p: list[float], q: list[float]) -> float:
    """KL(p || q) = sum p log(p / q), written out rather than taken from torch."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


# Three classes, neither logit vector a permutation of the other: KL(teacher || student) and the
# swapped KL(student || teacher) differ (by about 10 % at T = 2), so a swapped kl_div cannot pass.
STUDENT = [[2.0, 0.5, -1.0], [-0.5, 1.0, 0.0]]
TEACHER = [[0.0, 1.5, 0.5], [1.0, -1.0, 2.0]]


def test_kd_loss_matches_a_hand_computation():
    t = 2.0
    kl = kl_by_hand(softmax(TEACHER[0], t), softmax(STUDENT[0], t))
    assert kl_by_hand(softmax(STUDENT[0], t), softmax(TEACHER[0], t)) != pytest.approx(kl, rel=0.05)
    student, teacher, hard = torch.tensor(STUDENT[:1]), torch.tensor(TEACHER[:1]), torch.tensor(0.7)
    assert kd(t, alpha=1.0, scale=False)(student, teacher, hard).item() == pytest.approx(kl, rel=1e-5)
    assert kd(t, alpha=1.0, scale=True)(student, teacher, hard).item() == pytest.approx(kl * t * t, rel=1e-5)
    mixed = kd(t, alpha=0.25, scale=True)(student, teacher, hard).item()
    assert mixed == pytest.approx(0.25 * kl * t * t + 0.75 * 0.7, rel=1e-5)


def test_kl_is_per_sample_not_per_element():
    """A batch's soft term is the mean of its samples' KL (not also divided by the class count)."""
    t = 2.0
    per_sample = [kl_by_hand(softmax(tl, t), softmax(sl, t)) for sl, tl in zip(STUDENT, TEACHER, strict=True)]
    soft = kd(t, alpha=1.0, scale=False)(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(0.0))
    assert soft.item() == pytest.approx(sum(per_sample) / 2, rel=1e-5)


def test_soft_term_is_weighted_by_each_samples_class_weight_like_the_hard_term():
    """sum_i w_i KL_i / sum_i w_i, the normalisation CrossEntropyLoss(weight=...) uses for the hard term."""
    t = 2.0
    per_sample = [kl_by_hand(softmax(tl, t), softmax(sl, t)) for sl, tl in zip(STUDENT, TEACHER, strict=True)]
    sample_weights = [2.0, 2 / 3]  # class_weights([100, 300]) for labels [0, 1]
    weighted = sum(w * k for w, k in zip(sample_weights, per_sample, strict=True)) / sum(sample_weights)
    loss = kd(t, alpha=0.25, scale=True)
    student, teacher, hard = torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(0.7)
    value = loss(student, teacher, hard, torch.tensor(sample_weights)).item()
    assert value == pytest.approx(0.25 * weighted * t * t + 0.75 * 0.7, rel=1e-5)
    # Equal weights, whatever their size, are the unweighted loss.
    assert loss(student, teacher, hard, torch.full((2,), 3.0)).item() == pytest.approx(
        loss(student, teacher, hard).item(), rel=1e-6)


def test_distillation_objective_weights_both_terms_by_class():
    """The KD objective hands the hard term's class weights to the soft term, sample by sample."""
    weights = class_weights([100, 300])
    labels = torch.tensor([0, 1, 1])
    keys = ["a", "b", "c"]
    teacher_logits = torch.tensor([[1.0, -1.0], [0.5, 2.0], [-1.0, 0.0]])
    config = DistillConfig(temperature=2.0, alpha=0.5)
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    images = torch.randn(3, 3, 8, 8)
    objective = DistillationObjective(SupervisedObjective(weights), build_distillation_loss(config),
                                      CachedTeacher(dict(zip(keys, teacher_logits, strict=True)), torch.device("cpu")),
                                      student_size=8)
    loss, logits = objective(student, images, labels, keys)

    log_p_student = torch.log_softmax(logits / 2.0, dim=1)
    p_teacher = torch.softmax(teacher_logits / 2.0, dim=1)
    per_sample_kl = (p_teacher * (p_teacher.log() - log_p_student)).sum(dim=1)
    sample_weights = weights[labels]
    soft = (sample_weights * per_sample_kl).sum() / sample_weights.sum()
    hard = torch.nn.functional.cross_entropy(logits, labels, weight=weights)
    assert loss.item() == pytest.approx((0.5 * 4.0 * soft + 0.5 * hard).item(), rel=1e-5)


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


@pytest.mark.slow
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
    changed = tmp_path / "teacher2.safetensors"
    payload = load_checkpoint(checkpoint)
    payload["model_state"]["fc.bias"] += 1.0
    save_weights(changed, payload["model_state"], payload["metadata"])
    _, other_path, computed_other = build_cached_teacher(LoadedTeacher(changed, CPU), records, config.data, CPU,
                                                         progress=False)
    assert other_path != path and computed_other == len(records)


@pytest.mark.slow
def test_damaged_cache_is_rebuilt_with_a_message(synth_root, trained_teacher, tmp_path, capsys):
    checkpoint, _ = trained_teacher
    config = tiny_config(synth_root, tmp_path)
    records = resolve_split(config.data, synth_root)["train"]
    teacher = LoadedTeacher(checkpoint, CPU)
    _, path, _ = build_cached_teacher(teacher, records, config.data, CPU, progress=False)
    path.write_bytes(b"garbage")
    _, _, computed = build_cached_teacher(teacher, records, config.data, CPU, progress=False)
    assert computed == len(records) and "rebuilding" in capsys.readouterr().out


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cached", "online"])
def test_distilled_training_runs_with_all_trainer_features(synth_root, trained_teacher, tmp_path, mode):
    checkpoint, _ = trained_teacher
    distill = [f"distill.teacher={checkpoint}", f"distill.teacher_outputs={mode}", "distill.temperature=4"]
    result = run_experiment(tiny_config(synth_root, tmp_path, *distill, "train.epochs=1"), progress=False)
    assert load_checkpoint(result.best_checkpoint)["metadata"]["config"]["distill"]["teacher_outputs"] == mode
    # The teacher shaped what was minimised: the same run with alpha = 0 (labels only, same data
    # pipeline and seed) reports another training loss.
    labels_only = run_experiment(tiny_config(synth_root, tmp_path, *distill, "distill.alpha=0", "name=alpha0",
                                             "train.epochs=1"), progress=False)
    distilled_loss = result.state.history[0]["train_loss"]
    assert distilled_loss != pytest.approx(labels_only.state.history[0]["train_loss"], rel=1e-3)
    resumed = run_experiment(tiny_config(synth_root, tmp_path, f"distill.teacher={checkpoint}",
                                         f"distill.teacher_outputs={mode}", "distill.temperature=4",
                                         "train.epochs=2"), resume=True,
                             progress=False)
    assert resumed.state.epoch == 2


@pytest.mark.slow
def test_teacher_with_another_label_order_is_refused(synth_root, trained_teacher, tmp_path):
    checkpoint, _ = trained_teacher
    payload = load_checkpoint(checkpoint)
    payload["metadata"]["class_names"] = ["PNEUMONIA", "NORMAL"]
    swapped = tmp_path / "swapped.safetensors"
    save_weights(swapped, payload["model_state"], payload["metadata"])
    config = tiny_config(synth_root, tmp_path, f"distill.teacher={swapped}")
    with pytest.raises(CheckpointError, match="would be misread"):
        run_experiment(config, progress=False)

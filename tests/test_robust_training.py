"""Shift-robust training options: intensity augmentation and normalisation, mixup, label smoothing, EMA,
cosine schedule, ``train.keep`` and consistent distillation."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_config
from torch.nn import functional as F

from cxrdistill.config import ConfigError
from cxrdistill.data.transforms import AugmentSettings, XRayTransform, normalize_intensity
from cxrdistill.deployment.predict import predict_files
from cxrdistill.distillation.objective import DistillationObjective, mixed_logits
from cxrdistill.distillation.teacher import OnlineTeacher
from cxrdistill.experiments.run import run_experiment
from cxrdistill.runtime.checkpoint import load_checkpoint, load_training_state, model_from_checkpoint
from cxrdistill.training.objectives import BatchMix, SupervisedObjective
from cxrdistill.training.trainer import make_ema


def gradient_image(size: int = 48) -> np.ndarray:
    """A dim, low-contrast ramp: what an under-exposed film looks like."""
    return np.tile(np.linspace(40, 90, size, dtype=np.uint8), (size, 1))


def test_equalize_spreads_a_low_contrast_image_over_the_full_range():
    grey = torch.from_numpy(gradient_image()).unsqueeze(0)
    equalized = normalize_intensity(grey, "equalize")
    assert grey.max() - grey.min() == 50
    assert equalized.min() < 10 and equalized.max() == 255
    assert torch.equal(normalize_intensity(grey, "none"), grey)
    with pytest.raises(ValueError, match="unknown intensity normalisation"):
        normalize_intensity(grey, "clahe-ish")


def test_intensity_augmentation_changes_pixels_but_keeps_shape_and_range():
    pixels = gradient_image()
    plain = XRayTransform(None)(pixels)
    torch.manual_seed(0)
    settings = AugmentSettings(max_rotation=0, max_translate=0, scale_range=(1, 1), crop_scale=(0.6, 1.0),
                               brightness=0.4, contrast=0.4, gamma_range=(0.6, 1.6), blur_probability=1.0,
                               noise_std=0.05)
    augmented = [XRayTransform(settings)(pixels) for _ in range(4)]
    for image in augmented:
        assert image.shape == plain.shape
        assert not torch.allclose(image, plain, atol=1e-3)
    assert not torch.allclose(augmented[0], augmented[1])  # random per call


def test_batch_mix_blends_images_and_losses_with_the_same_weight():
    images = torch.arange(4.0).view(4, 1, 1, 1)
    mix = BatchMix(torch.tensor([1, 0, 3, 2]), 0.75)
    assert mix.images(images).flatten().tolist() == [0.25, 0.75, 2.25, 2.75]
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1, 1, 0])
    objective = SupervisedObjective()
    expected = 0.75 * F.cross_entropy(logits, labels) + 0.25 * F.cross_entropy(logits, labels[[1, 0, 3, 2]])
    assert torch.allclose(objective.hard_loss(logits, labels, mix), expected)


def test_label_smoothing_reaches_the_loss():
    logits, labels = torch.tensor([[4.0, -4.0]]), torch.tensor([0])
    sharp = SupervisedObjective().hard_loss(logits, labels)
    smoothed = SupervisedObjective(label_smoothing=0.2).hard_loss(logits, labels)
    # 0.9 * CE(class 0) + 0.1 * CE(class 1), by hand:
    log_p0 = -math.log1p(math.exp(-8.0))
    assert smoothed.item() == pytest.approx(-(0.9 * log_p0 + 0.1 * (log_p0 - 8.0)), rel=1e-5)
    assert smoothed > sharp


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_mixed_cached_targets_are_exactly_the_mix_of_soft_targets(temperature):
    teacher = torch.tensor([[3.0, -1.0], [-2.0, 0.5], [0.1, 0.2]])
    mix = BatchMix(torch.tensor([2, 0, 1]), 0.3)
    soft = torch.softmax(teacher / temperature, dim=1)
    expected = 0.3 * soft + 0.7 * soft[[2, 0, 1]]
    got = torch.softmax(mixed_logits(teacher, mix, temperature) / temperature, dim=1)
    assert torch.allclose(got, expected, atol=1e-6)


class RecordingModel(torch.nn.Module):
    """A stand-in network that remembers what it was shown (the teacher or the student)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.head = torch.nn.Linear(1, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(images.detach().clone())
        return self.head(images.mean(dim=(1, 2, 3)).unsqueeze(1))


def test_online_teacher_sees_exactly_the_mixed_view_the_student_sees():
    from types import SimpleNamespace

    from cxrdistill.config import DistillConfig
    from cxrdistill.distillation.losses import build_distillation_loss
    from cxrdistill.runtime.device import resolve_precision

    precision = resolve_precision(torch.device("cpu"), "off")
    teacher_model, student = RecordingModel(), RecordingModel()
    teacher = OnlineTeacher(SimpleNamespace(model=teacher_model, input_size=8), precision)
    objective = DistillationObjective(SupervisedObjective(), build_distillation_loss(DistillConfig()), teacher, 8)
    images = torch.rand(4, 3, 8, 8)
    mix = BatchMix(torch.tensor([3, 2, 1, 0]), 0.6)
    mixed = mix.images(images)
    objective(student, mixed, torch.tensor([0, 1, 1, 0]), ["a", "b", "c", "d"], mix)
    assert torch.equal(teacher_model.seen[0], mixed) and torch.equal(student.seen[0], mixed)


@pytest.mark.slow
def test_ema_run_saves_the_average_and_resumes_exactly(synth_root, tmp_path):
    options = ("train.ema_decay=0.9", "train.mixup_alpha=0.4", "train.schedule=cosine", "train.label_smoothing=0.1",
               "data.brightness=0.2", "data.noise_std=0.02", "data.crop_scale=[0.7,1.0]")
    straight = run_experiment(tiny_config(synth_root, tmp_path / "a", *options, "train.epochs=2"), progress=False)
    payload = load_checkpoint(straight.last_checkpoint)
    resume_state = load_training_state(straight.last_checkpoint)
    raw, averaged = resume_state["raw_model"], payload["model_state"]
    assert not torch.equal(raw["conv1.weight"], averaged["conv1.weight"])
    assert resume_state["ema_updates"] > 0
    # The checkpoint's model is the average, and it is what validation saw.
    model, _ = model_from_checkpoint(straight.last_checkpoint)
    assert torch.equal(model.conv1.weight, averaged["conv1.weight"])

    run_experiment(tiny_config(synth_root, tmp_path / "b", *options, "train.epochs=1"), progress=False)
    resumed = run_experiment(tiny_config(synth_root, tmp_path / "b", *options, "train.epochs=2"), resume=True,
                             progress=False)
    resumed_payload = load_checkpoint(resumed.last_checkpoint)
    for key, value in averaged.items():
        assert torch.equal(value, resumed_payload["model_state"][key]), key
    assert [row["lr"] for row in straight.state.history] == [row["lr"] for row in resumed.state.history]


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_decay_follows_its_schedule_for_weights_and_batchnorm_statistics(warmup):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    average = make_ema(model, 0.9, warmup=warmup)
    expected = [p.detach().clone() for p in model.state_dict().values() if p.is_floating_point()]
    for update in range(30):
        model(torch.randn(8, 3))  # moves BatchNorm's running statistics
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
        average.update_parameters(model)
        # the first update copies the model; update n (from 1) keeps a share `decay` of the average
        decay = 0.0 if update == 0 else min(0.9, (1 + update) / (10 + update)) if warmup else 0.9
        current = [p for p in model.state_dict().values() if p.is_floating_point()]
        expected = [decay * e + (1 - decay) * c for e, c in zip(expected, current, strict=True)]
    averaged = [p for p in average.module.state_dict().values() if p.is_floating_point()]
    for want, got in zip(expected, averaged, strict=True):
        torch.testing.assert_close(got, want)
    assert average.module[1].num_batches_tracked == model[1].num_batches_tracked == 30


def test_keep_chooses_which_checkpoint_is_handed_on(tmp_path):
    from cxrdistill.config import load_config
    from cxrdistill.experiments.run import RunResult, handed_on_checkpoint

    best, last = tmp_path / "best.safetensors", tmp_path / "last.safetensors"
    for keep, expected in (("best", best), ("last", last)):
        config = load_config(None, [f"output_dir={tmp_path.parent}", f"name={tmp_path.name}", f"train.keep={keep}"])
        assert handed_on_checkpoint(config) == expected
        assert RunResult(tmp_path, best, last, None, None, keep).final_checkpoint == expected


@pytest.mark.slow
def test_equalized_model_is_fed_equalized_images_by_predict(synth_root, tmp_path):
    result = run_experiment(tiny_config(synth_root, tmp_path, "data.intensity_normalization=equalize",
                                        "train.epochs=1"), progress=False)
    assert load_checkpoint(result.last_checkpoint)["metadata"]["intensity_normalization"] == "equalize"
    files = sorted((synth_root / "test" / "NORMAL").glob("*.jpeg"))[:2]
    predicted = predict_files(result.last_checkpoint, files)

    from cxrdistill.data.io import load_for_model
    from cxrdistill.data.transforms import to_model_input

    model, _ = model_from_checkpoint(result.last_checkpoint)
    model.eval()
    batch = torch.stack([to_model_input(normalize_intensity(torch.tensor(load_for_model(f, 32)).unsqueeze(0),
                                                            "equalize")) for f in files])
    with torch.no_grad():
        expected = torch.softmax(model(batch), dim=1)[:, 1]
    assert [p.prob_pneumonia for p in predicted] == pytest.approx(expected.tolist(), abs=1e-6)


@pytest.mark.parametrize(("setting", "field"), [("data.intensity_normalization=equalize", "intensity none"),
                                                ("data.border_crop=0.1", "border_crop 0.0")])
def test_teacher_and_student_must_preprocess_alike(synth_root, tmp_path, small_checkpoint, setting, field):
    """An (untrained) teacher of default preprocessing and a student that equalises, or crops the border:
    refused before training."""
    student = tiny_config(synth_root, tmp_path, "name=student", setting, f"distill.teacher={small_checkpoint}")
    with pytest.raises(ConfigError, match=f"preprocesses differently: {field} \\(teacher\\) against"):
        run_experiment(student, progress=False)
    assert not (tmp_path / "runs" / "student" / "last.safetensors").exists()


def test_class_weights_of_mixed_samples_are_mixed_like_their_labels():
    objective = SupervisedObjective(torch.tensor([2.0, 0.5]))
    labels = torch.tensor([0, 1, 1])
    mix = BatchMix(torch.tensor([1, 2, 0]), 0.8)
    assert objective.sample_weights(labels).tolist() == [2.0, 0.5, 0.5]
    expected = [0.8 * 2 + 0.2 * 0.5, 0.5, 0.8 * 0.5 + 0.2 * 2]
    assert objective.sample_weights(labels, mix).tolist() == pytest.approx(expected)
    assert SupervisedObjective().sample_weights(labels, mix) is None

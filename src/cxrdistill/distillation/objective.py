"""The knowledge-distillation training objective, plugged into the ordinary trainer."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from cxrdistill.config import ConfigError, ExperimentConfig
from cxrdistill.data.dataset import DataBundle
from cxrdistill.data.preprocess import Preprocessing
from cxrdistill.distillation.losses import build_distillation_loss
from cxrdistill.distillation.teacher import (
    TeacherSource,
    load_teacher,
    make_teacher_source,
    probability_logits,
    teacher_input_size,
)
from cxrdistill.evaluation.predict import resize_batch
from cxrdistill.runtime.device import Precision
from cxrdistill.training.objectives import BatchMix, Objective, SupervisedObjective, split_outputs


class DistillationObjective:
    """Student loss = distillation loss(student logits, teacher logits, hard-label loss, per-sample class
    weights), the weights being those of the hard loss, so class balance weighs both terms alike.

    With mixup, an *online* teacher sees exactly the mixed images the student sees (Beyer et al. 2022,
    "a good teacher is patient and consistent"). A *cached* teacher only knows the clean images, so its
    targets are mixed instead: the same blend of the two images' softened distributions.
    """

    def __init__(
        self, hard: SupervisedObjective, loss: nn.Module, teacher: TeacherSource, student_size: int
    ) -> None:
        self.hard = hard
        self.loss = loss
        self.teacher = teacher
        self.student_size = student_size

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, keys: list[str],
        mix: BatchMix | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        teacher_logits = self.teacher.logits(images, keys)
        if mix is not None and self.teacher.clean_targets:
            teacher_logits = mixed_logits(teacher_logits, mix, self.loss.temperature)
        if images.shape[-1] != self.student_size:
            images = resize_batch(images, self.student_size)
        outputs = model(images)
        logits = split_outputs(outputs)[0]
        hard_loss = self.hard.hard_loss(outputs, labels, mix)
        return self.loss(logits, teacher_logits, hard_loss, self.hard.sample_weights(labels, mix)), logits


def mixed_logits(logits: torch.Tensor, mix: BatchMix, temperature: float) -> torch.Tensor:
    """Logits whose softmax at ``temperature`` is the mix of the two images' softmaxes at that temperature.

    ``T * log(p)`` of a distribution ``p`` gives back ``p`` under ``softmax(. / T)``, so any KD loss that
    softens logits by T receives exactly the mixed soft targets.
    """
    probs = torch.softmax(logits.float() / temperature, dim=1)
    return probability_logits(mix.lam * probs + (1.0 - mix.lam) * probs[mix.perm.to(probs.device)], temperature)


def data_image_size(config: ExperimentConfig, student_size: int) -> int:
    """Online KD decodes training images at the larger of the two input sizes; otherwise the student's."""
    if not config.distill.teachers or config.distill.teacher_outputs != "online":
        return student_size
    return max([student_size, *(teacher_input_size(path) for path in config.distill.teachers)])


def build_objective(
    config: ExperimentConfig, bundle: DataBundle, hard: SupervisedObjective, precision: Precision,
    student_size: int, progress: bool = True,
) -> Objective:
    """Plain supervised training, or KD when the config names a teacher."""
    hard.to(precision.device)
    if not config.distill.teachers:
        return hard
    loss = build_distillation_loss(config.distill)
    teachers = [load_teacher(path, precision) for path in config.distill.teachers]
    for path, teacher in zip(config.distill.teachers, teachers, strict=True):
        trained_with = teacher.preprocessing
        fed_with = Preprocessing.of_data(config.data, trained_with.input_size)
        differing = [f"{field.name} {getattr(trained_with, field.name)} (teacher) against "
                     f"{getattr(fed_with, field.name)} (student)" for field in dataclasses.fields(Preprocessing)
                     if getattr(trained_with, field.name) != getattr(fed_with, field.name)]
        if differing:
            raise ConfigError(
                f"the teacher {path} preprocesses differently: {'; '.join(differing)}; it would see "
                f"images unlike its training data — use the same data settings for both"
            )
    source = make_teacher_source(config.distill.teacher_outputs, teachers, bundle.split["train"], config.data,
                                 precision, config.distill.temperature, progress)
    return DistillationObjective(hard, loss, source, student_size)

"""Distillation losses, looked up by name (``distill.loss`` in a config).

``kd`` is Hinton et al. (2015): the KL divergence between the teacher's and the student's class
distributions softened at temperature T, mixed with the hard-label loss by ``alpha``:

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * hard_loss

The soft term's gradient shrinks as 1/T^2, so it is scaled by T^2 by default to keep the two terms
balanced across temperatures (Hinton's recommendation; the source paper does not say — a setting).
KL is taken per sample and averaged over samples (``batchmean``); the element-wise ``"mean"``
silently divides by the number of classes as well.

Class balance means the same in both terms: with ``train.class_balance: loss`` the hard term is
``CrossEntropyLoss(weight=w)``, and the soft term weighs each sample's KL by the class weight of its
true label, normalised the same way: ``sum_i w[y_i] KL_i / sum_i w[y_i]``. Without class weights
it is the plain mean.

A new loss registers a factory taking the :class:`DistillConfig` and returns a module called as
``loss(student_logits, teacher_logits, hard_loss, sample_weights)`` (``sample_weights``: one weight
per sample, or ``None``); the trainer never changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from cxrdistill.config import DistillConfig
from cxrdistill.errors import CxrDistillError
from cxrdistill.registry import Registry

DISTILLATION_LOSSES: Registry[Callable[[DistillConfig], nn.Module]] = Registry("distillation loss")


class DistillationSettingError(CxrDistillError, ValueError):
    """A distillation setting outside its valid range."""


@DISTILLATION_LOSSES.register("kd")
class KnowledgeDistillationLoss(nn.Module):
    """Soft-target KL at temperature T plus weighted hard-label loss."""

    def __init__(self, config: DistillConfig) -> None:
        super().__init__()
        if not config.temperature > 0:
            raise DistillationSettingError(f"distill.temperature must be > 0, got {config.temperature}")
        if not 0.0 <= config.alpha <= 1.0:
            raise DistillationSettingError(f"distill.alpha must be within [0, 1], got {config.alpha}")
        self.temperature = config.temperature
        self.alpha = config.alpha
        self.soft_scale = config.temperature**2 if config.scale_by_t2 else 1.0

    def soft_loss(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, sample_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """KL(teacher || student) at temperature T per sample, averaged with ``sample_weights`` if given."""
        t = self.temperature
        per_sample = F.kl_div(
            F.log_softmax(student_logits.float() / t, dim=1),
            F.log_softmax(teacher_logits.float() / t, dim=1),
            reduction="none",
            log_target=True,
        ).sum(dim=1)
        if sample_weights is None:
            return per_sample.mean()
        return (sample_weights * per_sample).sum() / sample_weights.sum()

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, hard_loss: torch.Tensor,
        sample_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``sample_weights``: the class weight of each sample's label, as the hard loss used (``None``: unweighted)."""
        if self.alpha > 0:
            soft = self.soft_loss(student_logits, teacher_logits, sample_weights)
        else:
            soft = hard_loss.new_zeros(())
        return self.alpha * self.soft_scale * soft + (1.0 - self.alpha) * hard_loss


def build_distillation_loss(config: DistillConfig) -> nn.Module:
    """The distillation loss registered under ``distill.loss``."""
    return DISTILLATION_LOSSES.get(config.loss)(config)

"""Distillation losses, looked up by name (``distill.loss`` in a config).

``kd`` is Hinton et al. (2015): the KL divergence between the teacher's and the student's class
distributions softened at temperature T, mixed with the hard-label loss by ``alpha``:

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * hard_loss

The soft term's gradient shrinks as 1/T^2, so it is scaled by T^2 by default to keep the two terms
balanced across temperatures (Hinton's recommendation; the source paper does not say — a setting).
KL uses ``reduction="batchmean"``: the true per-sample KL. The element-wise ``"mean"`` silently
divides by the number of classes as well.

A new loss registers a factory taking the :class:`DistillConfig`; the trainer never changes.
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

    def soft_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return F.kl_div(
            F.log_softmax(student_logits.float() / t, dim=1),
            F.log_softmax(teacher_logits.float() / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, hard_loss: torch.Tensor
    ) -> torch.Tensor:
        soft = self.soft_loss(student_logits, teacher_logits) if self.alpha > 0 else hard_loss.new_zeros(())
        return self.alpha * self.soft_scale * soft + (1.0 - self.alpha) * hard_loss


def build_distillation_loss(config: DistillConfig) -> nn.Module:
    return DISTILLATION_LOSSES.get(config.loss)(config)

"""What the trainer minimises. A training objective turns a batch into a loss and the main logits.

Keeping this out of the loop is what lets knowledge distillation reuse the whole trainer: the KD
objective (``cxrdistill.distillation``) is just another objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torchvision.models import InceptionOutputs


@dataclass(frozen=True)
class BatchMix:
    """How a batch was mixed (mixup): image ``i`` is ``lam * x[i] + (1 - lam) * x[perm[i]]``."""

    perm: torch.Tensor
    lam: float

    @classmethod
    def draw(cls, batch_size: int, alpha: float) -> BatchMix:
        """A Beta(alpha, alpha) weight and a shuffle, from torch's RNG (restored on resume)."""
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        return cls(torch.randperm(batch_size), lam)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        return self.lam * images + (1.0 - self.lam) * images[self.perm.to(images.device)]

    def blend(self, loss_of: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """A loss against mixed labels: the same mix of the losses against each image's own label."""
        return self.lam * loss_of(labels) + (1.0 - self.lam) * loss_of(labels[self.perm.to(labels.device)])


class Objective(Protocol):
    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, keys: list[str],
        mix: BatchMix | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def split_outputs(outputs: torch.Tensor | InceptionOutputs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Main and auxiliary logits; InceptionV3 returns both in training mode."""
    if isinstance(outputs, InceptionOutputs):
        return outputs.logits, outputs.aux_logits
    return outputs, None


def class_weights(counts: list[int]) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1, against the data's 3:1 pneumonia imbalance."""
    counts_t = torch.tensor(counts, dtype=torch.float32).clamp(min=1)
    return counts_t.sum() / (len(counts) * counts_t)


class SupervisedObjective:
    """Cross-entropy on the labels (optionally class-weighted and label-smoothed), plus InceptionV3's auxiliary head."""

    def __init__(self, weights: torch.Tensor | None = None, aux_weight: float = 0.4,
                 label_smoothing: float = 0.0) -> None:
        self.criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)
        self.aux_weight = aux_weight

    def to(self, device: torch.device) -> SupervisedObjective:
        self.criterion.to(device)
        return self

    def sample_weights(self, labels: torch.Tensor, mix: BatchMix | None = None) -> torch.Tensor | None:
        """Each sample's class weight as the cross-entropy applies it (``None`` when unweighted), for
        other loss terms, such as KD's soft term, to weigh samples the same way; mixed like the labels."""
        weights = self.criterion.weight
        if weights is None:
            return None
        if mix is None:
            return weights[labels]
        return mix.lam * weights[labels] + (1.0 - mix.lam) * weights[labels[mix.perm.to(labels.device)]]

    def hard_loss(
        self, outputs: torch.Tensor | InceptionOutputs, labels: torch.Tensor, mix: BatchMix | None = None
    ) -> torch.Tensor:
        logits, aux = split_outputs(outputs)

        def loss_of(targets: torch.Tensor) -> torch.Tensor:
            loss = self.criterion(logits.float(), targets)
            if aux is not None:
                loss = loss + self.aux_weight * self.criterion(aux.float(), targets)
            return loss

        return loss_of(labels) if mix is None else mix.blend(loss_of, labels)

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, keys: list[str],
        mix: BatchMix | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = model(images)
        return self.hard_loss(outputs, labels, mix), split_outputs(outputs)[0]

"""What the trainer minimises. A training objective turns a batch into a loss and the main logits.

Keeping this out of the loop is what lets knowledge distillation reuse the whole trainer: the KD
objective (``cxrdistill.distillation``) is just another objective.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from torchvision.models import InceptionOutputs


class Objective(Protocol):
    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, keys: list[str]
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
    """Cross-entropy on the labels (optionally class-weighted), plus InceptionV3's auxiliary head."""

    def __init__(self, weights: torch.Tensor | None = None, aux_weight: float = 0.4) -> None:
        self.criterion = nn.CrossEntropyLoss(weight=weights)
        self.aux_weight = aux_weight

    def to(self, device: torch.device) -> SupervisedObjective:
        self.criterion.to(device)
        return self

    def sample_weights(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Each sample's class weight as the cross-entropy applies it (``None`` when unweighted), for
        other loss terms, such as KD's soft term, to weigh samples the same way."""
        weights = self.criterion.weight
        return None if weights is None else weights[labels]

    def hard_loss(self, outputs: torch.Tensor | InceptionOutputs, labels: torch.Tensor) -> torch.Tensor:
        logits, aux = split_outputs(outputs)
        loss = self.criterion(logits.float(), labels)
        if aux is not None:
            loss = loss + self.aux_weight * self.criterion(aux.float(), labels)
        return loss

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, keys: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = model(images)
        return self.hard_loss(outputs, labels), split_outputs(outputs)[0]

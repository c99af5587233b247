"""Running a model over a loader: labels, probabilities and logits, gathered without per-batch syncs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxrdistill.training.device import Precision


@dataclass
class Predictions:
    labels: np.ndarray
    logits: np.ndarray
    keys: list[str]

    @property
    def prob_positive(self) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.logits), dim=1)[:, 1].numpy()

    def mean_cross_entropy(self) -> float:
        return float(nn.functional.cross_entropy(torch.from_numpy(self.logits), torch.from_numpy(self.labels)))


@torch.no_grad()
def predict(
    model: nn.Module, loader: DataLoader, precision: Precision, input_size: int | None = None, progress: bool = False,
    desc: str = "predict",
) -> Predictions:
    """Eval-mode logits for every sample; ``input_size`` resizes batches decoded at another size."""
    model.eval()
    logits, labels, keys = [], [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch"):
        images = batch["image"].to(precision.device, non_blocking=True)
        if input_size is not None and images.shape[-1] != input_size:
            images = resize_batch(images, input_size)
        with precision.autocast():
            logits.append(model(images).float())
        labels.append(batch["label"])
        keys += list(batch["key"])
    return Predictions(torch.cat(labels).numpy(), torch.cat(logits).cpu().numpy(), keys)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """One decoded image serves models of different input sizes (299 teacher, 224 student)."""
    return nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)

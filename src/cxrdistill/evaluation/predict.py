"""Running a model over a loader: labels, probabilities and logits, gathered without per-batch syncs.

Under ``torchrun`` a prediction ``across_ranks`` splits the loader's dataset among the processes and
gathers the results, so every rank gets the whole split's predictions in order, each computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxrdistill.runtime import distributed
from cxrdistill.runtime.device import Precision


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
    desc: str = "predict", across_ranks: bool = False,
) -> Predictions:
    """Eval-mode logits for every sample; ``input_size`` resizes batches decoded at another size.

    ``across_ranks`` (every rank must call it): each process predicts its share of an unshuffled loader.
    """
    if across_ranks and distributed.is_distributed():
        shard = predict(model, distributed.shard_loader(loader), precision, input_size, progress, desc)
        items = distributed.gather_in_order(list(zip(shard.labels, shard.logits, shard.keys, strict=True)),
                                            len(loader.dataset))
        return Predictions(np.array([i[0] for i in items]), np.stack([i[1] for i in items]), [i[2] for i in items])
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

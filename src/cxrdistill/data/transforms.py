"""From a decoded grey image to the tensor an ImageNet model expects.

:func:`to_model_input` is the one normalisation used for training, evaluation, export and serving:
grey uint8 -> float in [0, 1] -> replicated to three channels -> ImageNet mean/std. Augmentation is
mild and geometric. Horizontal flips are off by default: a chest X-ray is not left-right symmetric
(heart on the left, situs conventions, side markers), so a flipped film is an implausible patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import v2

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def to_model_input(grey: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """``(..., 1, H, W)`` uint8 grey -> ``(..., 3, H, W)`` float, ImageNet-normalised."""
    if grey.dtype != torch.uint8:
        raise TypeError(f"expected uint8 grey pixels, got {grey.dtype}; decode with cxrdistill.data.io.read_grey")
    image = grey.float().div_(255.0).expand(*grey.shape[:-3], 3, *grey.shape[-2:])
    mean_t = torch.tensor(mean, dtype=image.dtype).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype).view(3, 1, 1)
    return (image - mean_t) / std_t


@dataclass(frozen=True)
class AugmentSettings:
    max_rotation: float = 10.0
    max_translate: float = 0.06
    scale_range: tuple[float, float] = (0.9, 1.1)
    horizontal_flip: bool = False


class XRayTransform:
    """Decoded ``H x W`` uint8 array -> model tensor, with optional augmentation."""

    def __init__(self, augment: AugmentSettings | None) -> None:
        self.augment = augment
        steps: list[v2.Transform] = []
        if augment is not None:
            steps.append(
                v2.RandomAffine(
                    degrees=augment.max_rotation,
                    translate=(augment.max_translate, augment.max_translate),
                    scale=augment.scale_range,
                )
            )
            if augment.horizontal_flip:
                steps.append(v2.RandomHorizontalFlip())
        self._augment = v2.Compose(steps) if steps else None

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        grey = torch.from_numpy(np.array(pixels, dtype=np.uint8)).unsqueeze(0)  # a copy: cache rows are read-only
        if self._augment is not None:
            grey = self._augment(grey)
        return to_model_input(grey)

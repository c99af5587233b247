"""From a decoded grey image to the tensor an ImageNet model expects.

:func:`to_model_input` is the one normalisation used for training, evaluation, export and serving:
grey uint8 -> float in [0, 1] -> replicated to three channels -> ImageNet mean/std. Before it,
:func:`normalize_intensity` optionally equalises the histogram — a read-time normalisation that is part
of the model (stored in its checkpoint and applied by every path that feeds it), because films from
another hospital or year differ first of all in exposure and contrast.

Augmentation is geometric (mild affine, or a random resized crop) plus, optionally, intensity changes
(brightness, contrast, gamma, blur, noise) that imitate other scanners. Horizontal flips are off by
default: a chest X-ray is not left-right symmetric (heart on the left, situs conventions, side
markers), so a flipped film is an implausible patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INTENSITY_NORMALIZATIONS: tuple[str, ...] = ("none", "equalize")


def to_model_input(grey: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """``(..., 1, H, W)`` uint8 grey -> ``(..., 3, H, W)`` float, ImageNet-normalised."""
    if grey.dtype != torch.uint8:
        raise TypeError(f"expected uint8 grey pixels, got {grey.dtype}; decode with cxrdistill.data.io.read_grey")
    image = grey.float().div_(255.0).expand(*grey.shape[:-3], 3, *grey.shape[-2:])
    mean_t = torch.tensor(mean, dtype=image.dtype).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype).view(3, 1, 1)
    return (image - mean_t) / std_t


def normalize_intensity(grey: torch.Tensor, method: str = "none") -> torch.Tensor:
    """``none`` passes uint8 pixels through; ``equalize`` flattens their histogram (per image)."""
    if method == "none":
        return grey
    if method == "equalize":
        return F.equalize(grey)
    raise ValueError(f"unknown intensity normalisation {method!r}; use one of {list(INTENSITY_NORMALIZATIONS)}")


def model_input(pixels: np.ndarray, intensity: str = "none", augment: v2.Transform | None = None) -> torch.Tensor:
    """Resized ``H x W`` uint8 pixels -> the ``(3, H, W)`` model tensor: intensity normalisation, the training
    augmentation if any, then :func:`to_model_input`. Every path to a model, training included, runs this."""
    grey = torch.from_numpy(np.array(pixels, dtype=np.uint8)).unsqueeze(0)  # a copy: cache rows are read-only
    grey = normalize_intensity(grey, intensity)
    if augment is not None:
        grey = augment(grey)
    return to_model_input(grey)


@dataclass(frozen=True)
class AugmentSettings:
    max_rotation: float = 10.0
    max_translate: float = 0.06
    scale_range: tuple[float, float] = (0.9, 1.1)
    horizontal_flip: bool = False
    crop_scale: tuple[float, float] | None = None
    """Random resized crop area range (e.g. 0.7-1.0) instead of the affine scale; ``None`` keeps the affine."""
    brightness: float = 0.0
    contrast: float = 0.0
    """Brightness and contrast jitter: factors drawn from ``[1 - x, 1 + x]``; 0 turns each off."""
    gamma_range: tuple[float, float] = (1.0, 1.0)
    blur_probability: float = 0.0
    noise_std: float = 0.0
    """Gaussian noise on the [0, 1] intensity scale; 0 turns it off."""

    def intensity_steps(self) -> list[v2.Transform]:
        steps: list[v2.Transform] = []
        if self.brightness or self.contrast:
            steps.append(v2.ColorJitter(brightness=self.brightness, contrast=self.contrast))
        if self.gamma_range != (1.0, 1.0):
            steps.append(RandomGamma(self.gamma_range))
        if self.blur_probability > 0:
            steps.append(v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=self.blur_probability))
        if self.noise_std > 0:
            steps.append(GaussianNoiseUint8(self.noise_std))
        return steps


class RandomGamma(v2.Transform):
    """Gamma drawn uniformly from ``gamma_range``: the non-linear contrast change another detector gives."""

    def __init__(self, gamma_range: tuple[float, float]) -> None:
        super().__init__()
        self.gamma_range = gamma_range

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        gamma = float(torch.empty(()).uniform_(*self.gamma_range))
        return F.adjust_gamma(grey, gamma)


class GaussianNoiseUint8(v2.Transform):
    """Additive noise on uint8 pixels (torchvision's GaussianNoise takes floats only)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        noisy = grey.float() + torch.randn(grey.shape) * (self.std * 255.0)
        return noisy.round_().clamp_(0, 255).to(torch.uint8)


class XRayTransform:
    """Decoded ``H x W`` uint8 array -> model tensor: intensity normalisation, optional augmentation."""

    def __init__(self, augment: AugmentSettings | None, intensity: str = "none") -> None:
        self.augment = augment
        self.intensity = intensity
        normalize_intensity(torch.zeros(1, 1, 1, dtype=torch.uint8), intensity)  # refuse a bad name up front
        steps: list[v2.Transform] = []
        if augment is not None:
            if augment.crop_scale is not None:
                steps.append(v2.RandomAffine(degrees=augment.max_rotation,
                                             translate=(augment.max_translate, augment.max_translate)))
                steps.append(_SameSizeResizedCrop(augment.crop_scale))
            else:
                steps.append(
                    v2.RandomAffine(
                        degrees=augment.max_rotation,
                        translate=(augment.max_translate, augment.max_translate),
                        scale=augment.scale_range,
                    )
                )
            if augment.horizontal_flip:
                steps.append(v2.RandomHorizontalFlip())
            steps += augment.intensity_steps()
        self._augment = v2.Compose(steps) if steps else None

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        return model_input(pixels, self.intensity, self._augment)


class _SameSizeResizedCrop(v2.Transform):
    """``RandomResizedCrop`` back to the input's own size (the cache already holds the model's size)."""

    def __init__(self, scale: tuple[float, float]) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        crop = v2.RandomResizedCrop(tuple(grey.shape[-2:]), scale=self.scale, ratio=(0.85, 1.15), antialias=True)
        return crop(grey)

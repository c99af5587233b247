"""Grad-CAM heat maps: the hot spot follows a lesion, the target layer is found per architecture, overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cxrdistill.config import load_config
from cxrdistill.data.transforms import to_model_input
from cxrdistill.deployment.heatmap import GradCam, find_target_layer, overlay
from cxrdistill.models import create_model

SIZE = 64


def _lesion_detector() -> nn.Module:
    """PNEUMONIA log-odds = twice the brightest local mean: a network whose score depends on one region only.

    Two strided box filters (local brightness at 1/4 resolution), ReLU, global max pool, a 1 -> 2 head.
    """
    first, second = nn.Conv2d(3, 1, 5, stride=2, padding=2), nn.Conv2d(1, 1, 3, stride=2, padding=1)
    head = nn.Linear(1, 2)
    with torch.no_grad():
        first.weight.fill_(1 / 75), first.bias.zero_()
        second.weight.fill_(1 / 9), second.bias.fill_(-0.5)
        head.weight.copy_(torch.tensor([[-1.0], [1.0]])), head.bias.zero_()
    return nn.Sequential(first, nn.ReLU(), second, nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), head)


def _film_with_lesion(row: int, col: int, seed: int = 0) -> np.ndarray:
    """A noisy mid-grey film with a bright disc (radius 5) at (row, col) and a fainter distractor elsewhere."""
    rng = np.random.default_rng(seed)
    film = rng.normal(90, 12, (SIZE, SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    film[(yy - row) ** 2 + (xx - col) ** 2 <= 25] = 235
    film[(yy - (SIZE - 1 - row)) ** 2 + (xx - col) ** 2 <= 9] = 160  # mirrored, smaller, dimmer
    return np.clip(film, 0, 255).astype(np.uint8)


def _hot_spot(cam: GradCam, grey: np.ndarray) -> np.ndarray:
    heat = cam(to_model_input(torch.from_numpy(grey)[None, None]))[0]
    assert heat.shape == (SIZE, SIZE) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    return np.array(np.unravel_index(heat.argmax(), heat.shape))


def test_hot_spot_follows_the_lesion() -> None:
    cam = GradCam(_lesion_detector(), SIZE)
    assert cam.layer_name == "2"  # the last convolution
    spots = {}
    for position in [(14, 44), (46, 18)]:  # not each other's transpose
        spots[position] = _hot_spot(cam, _film_with_lesion(*position))
        assert np.linalg.norm(spots[position] - np.array(position)) <= 6, (position, spots[position])
    assert np.linalg.norm(spots[(14, 44)] - spots[(46, 18)]) > 30


@pytest.mark.parametrize(("architecture", "size", "layer"), [
    ("alexnet", 64, "features.10"),  # the last Conv2d: AlexNet's final max pool would coarsen the map
    ("inception_v3", 75, "Mixed_7c"),
    ("resnet18", 32, "layer4"),
])
def test_target_layer_per_architecture(architecture: str, size: int, layer: str) -> None:
    model = create_model(load_config(None, [f"model.name={architecture}"]).model, image_size=size)
    assert find_target_layer(model, size)[0] == layer


def test_overlay_keeps_cold_regions_grey_and_colours_hot_ones() -> None:
    grey = np.tile(np.linspace(0, 255, 80).astype(np.uint8), (40, 1))  # 40 x 80: aspect ratio kept
    heat = np.zeros((SIZE, SIZE), dtype=np.float32)
    heat[20:40, 40:60] = 1.0
    image = np.asarray(overlay(grey, heat)).astype(int)
    assert image.shape == (40, 80, 3)
    spread = image.max(axis=2) - image.min(axis=2)
    assert spread[:, :20].max() <= 1  # cold: R = G = B
    assert spread[15:18, 55:70].min() > 40  # hot: coloured

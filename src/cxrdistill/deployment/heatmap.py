"""Grad-CAM heat maps: where in the film the model's PNEUMONIA evidence lies, drawn over the X-ray.

Grad-CAM (Selvaraju et al. 2017) weights a convolutional layer's feature maps by the mean gradient of the
score with respect to each map and keeps the positive sum. The score is the log-odds of PNEUMONIA
(positive-class logit minus the other), since that alone decides a two-class softmax's probability.

Implementation: captum's ``LayerGradCam``. Its dependencies (torch, numpy, matplotlib, tqdm, packaging)
are all core dependencies already, so it adds a ~4 MB pure-Python package; ``grad-cam``
(pytorch-grad-cam) would pull OpenCV (~60 MB) for resizing and colour maps we get from torch and
matplotlib. A hand-written hook version would be ~20 lines, but captum is maintained, tested on many
architectures, and handles hooks and gradients in one place.

Heat maps need gradients, so they are computed on the PyTorch model (a checkpoint), never on ONNX.

The target layer is found generically by :func:`find_target_layer`: the outermost block that ends at the
resolution of the network's last convolution — AlexNet's (and VGG's) last ``Conv2d``, InceptionV3's
``Mixed_7c``, a ResNet's ``layer4`` — so no per-architecture table is needed.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import nn


def _last_conv_resolution_blocks(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Modules that contain a ``Conv2d`` and return a 4-D map, in the order their forward passes finish,
    with the spatial size of the last ``Conv2d`` to run."""
    finished: list[tuple[str, nn.Module, torch.Size]] = []
    last_conv_size: list[torch.Size] = []

    def record(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(module, nn.Conv2d):
                last_conv_size[:] = [output.shape[-2:]]
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                finished.append((name, module, output.shape[-2:]))

        return hook

    candidates = [(name, module) for name, module in model.named_modules()
                  if name and any(isinstance(m, nn.Conv2d) for m in module.modules())]
    handles = [module.register_forward_hook(record(name)) for name, module in candidates]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    if not last_conv_size:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return [(name, module) for name, module, size in finished if size == last_conv_size[0]]


def find_target_layer(model: nn.Module, input_size: int) -> tuple[str, nn.Module]:
    """The Grad-CAM layer: the last block to finish that contains a convolution and still has the last
    convolution's resolution (later pooling would coarsen the map; an earlier layer sees less context)."""
    was_training = model.training
    model.eval()
    try:
        blocks = _last_conv_resolution_blocks(model, torch.zeros(1, 3, input_size, input_size))
    finally:
        model.train(was_training)
    return blocks[-1]


class _LogOdds(nn.Module):
    """Positive-class logit minus the other: the score Grad-CAM explains."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.network(images)
        return logits[:, 1] - logits[:, 0]


class GradCam:
    """Grad-CAM maps in [0, 1] at input resolution for a two-class network (built once, used per batch)."""

    def __init__(self, model: nn.Module, input_size: int) -> None:
        try:
            from captum.attr import LayerGradCam
        except ImportError as error:
            raise ImportError("heat maps need captum, part of the 'deploy' extra: pip install 'cxrdistill[deploy]'"
                              ) from error

        self.model = model.eval()
        self.layer_name, layer = find_target_layer(model, input_size)
        self._cam = LayerGradCam(_LogOdds(model), layer)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """``(N, 3, H, W)`` model inputs -> ``(N, H, W)`` maps, each scaled so its maximum is 1 (0 where flat)."""
        with torch.enable_grad():
            maps = self._cam.attribute(images, relu_attributions=True).detach()
        maps = torch.nn.functional.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
        maps = maps[:, 0].clamp_min(0)
        peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        return (maps / peak).numpy()


OVERLAY_MAX_SIDE = 512
"""Overlays are drawn at the image's own aspect ratio, its longer side at most this many pixels."""


def overlay(grey: np.ndarray, cam: np.ndarray, max_side: int = OVERLAY_MAX_SIDE) -> Image.Image:
    """The grey film with the map in colour on top: hot regions coloured (turbo), cold ones left grey."""
    import matplotlib

    height, width = grey.shape
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    film = np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    heat = np.asarray(Image.fromarray(cam.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    colours = matplotlib.colormaps["turbo"](heat)[..., :3]
    alpha = 0.6 * heat[..., None]
    blended = (1 - alpha) * film[..., None] + alpha * colours
    return Image.fromarray(np.round(blended * 255).astype(np.uint8), mode="RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

"""Learnable SRM residual front-end: high-pass "noise residual" maps placed before a CNN backbone.

The source paper (section II.C, eqs. 1-14) borrows residual features from steganalysis: a residual is a
pixel minus a prediction of it from its neighbours, which suppresses image content and keeps fine
texture. This module turns that idea into an ``nn.Module`` so it can be judged by an ablation against
the same backbone without it. It computes, on one grey channel:

* the 30 fixed high-pass filters of the spatial rich model (SRM) of J. Fridrich and J. Kodovsky,
  "Rich Models for Steganalysis of Digital Images", IEEE Transactions on Information Forensics and
  Security 7(3):868-882, 2012: first-, second- and third-order directional residuals, and the 3x3 and
  5x5 SQUARE and EDGE kernels with their rotations (see :func:`srm_kernels`);
* learnable residuals ``sum_p w_p (Z_p - Z_centre)`` (eq. 12) whose weights ``w`` are ordinary
  parameters; eqs. 13-14 are plain SGD with momentum, so the project's usual optimiser trains them;
* non-linear residuals (eq. 4): element-wise min and max over groups of directional residuals;

then quantises and truncates every map, ``trunc_T(round(R / c))`` (eq. 5), and projects all maps
(optionally with the input image) to ``out_channels`` with a 1x1 convolution so that any ImageNet
backbone can follow.

Scaling: SRM thresholds (T of about 2, c of about 1) assume residuals in pixel units of an 8-bit image.
The input is an ImageNet-normalised 3-channel copy of a grey X-ray, so the normalisation is undone
per channel, the three channels are averaged (identical for a replicated grey image; a plain luminance
proxy otherwise), and the result is scaled to 0..255 before any residual is taken.

Kernel normalisation: each fixed kernel is divided by the magnitude of its centre tap (1, 2, 3 for the
first-, second- and third-order residuals, 4 for the 3x3 and 12 for the 5x5 kernels). These are the
SRM's own quantisation multipliers, so after division a single step ``c`` suits every kernel.

Borders are padded by replicating edge pixels, so a constant image gives zero everywhere, borders
included, and the output keeps the input's height and width.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cxrdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from torchvision.models.inception import InceptionOutputs

KERNEL_SIZE = 5
"""Every fixed and learned kernel is embedded, centred, in a 5x5 array so one convolution does all."""

# Unit steps (dy, dx), rows growing downwards, in the order the directional kernels are listed.
_DIRECTIONS: dict[str, tuple[int, int]] = {
    "right": (0, 1),
    "left": (0, -1),
    "down": (1, 0),
    "up": (-1, 0),
    "down_right": (1, 1),
    "up_left": (-1, -1),
    "down_left": (1, -1),
    "up_right": (-1, 1),
}
_AXES: dict[str, tuple[int, int]] = {
    "horizontal": (0, 1),
    "vertical": (1, 0),
    "diagonal": (1, 1),
    "antidiagonal": (1, -1),
}
# torch.rot90 turns the "up" version anticlockwise by k quarter turns.
_ROTATIONS = ("up", "left", "down", "right")

_SQUARE_3X3 = ((-1, 2, -1), (2, -4, 2), (-1, 2, -1))
_SQUARE_5X5 = (
    (-1, 2, -2, 2, -1),
    (2, -6, 8, -6, 2),
    (-2, 8, -12, 8, -2),
    (2, -6, 8, -6, 2),
    (-1, 2, -2, 2, -1),
)

SRM_KERNEL_NAMES: tuple[str, ...] = (
    *(f"1st_{d}" for d in _DIRECTIONS),
    *(f"2nd_{a}" for a in _AXES),
    *(f"3rd_{d}" for d in _DIRECTIONS),
    "square3x3",
    *(f"edge3x3_{r}" for r in _ROTATIONS),
    "square5x5",
    *(f"edge5x5_{r}" for r in _ROTATIONS),
)
"""Names of the 30 fixed kernels, in the order of :func:`srm_kernels`."""

MINMAX_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("1st_hv", ("1st_right", "1st_down")),
    ("2nd_hv", ("2nd_horizontal", "2nd_vertical")),
    ("2nd_diagonals", ("2nd_diagonal", "2nd_antidiagonal")),
    ("3rd_hv", ("3rd_right", "3rd_down")),
    ("edge3x3", tuple(f"edge3x3_{r}" for r in _ROTATIONS)),
    ("edge5x5", tuple(f"edge5x5_{r}" for r in _ROTATIONS)),
)
"""Groups of fixed residuals whose element-wise min and max become extra maps (eq. 4)."""


def _from_taps(taps: dict[tuple[int, int], float]) -> Tensor:
    """Place taps given as (dy, dx) offsets from the centre into a 5x5 array."""
    kernel = torch.zeros(KERNEL_SIZE, KERNEL_SIZE)
    centre = KERNEL_SIZE // 2
    for (dy, dx), value in taps.items():
        kernel[centre + dy, centre + dx] += value
    return kernel


def _centred(rows: tuple[tuple[int, ...], ...]) -> Tensor:
    """Embed a small square kernel in the middle of a 5x5 array."""
    small = torch.tensor(rows, dtype=torch.float32)
    pad = (KERNEL_SIZE - small.shape[0]) // 2
    return F.pad(small, (pad, pad, pad, pad))


def _edge(square: tuple[tuple[int, ...], ...]) -> list[Tensor]:
    """EDGE kernels: the upper half (rows above and through the centre) of a SQUARE, in 4 rotations."""
    half = len(square) // 2
    up = _centred(tuple(row if i <= half else (0,) * len(row) for i, row in enumerate(square)))
    return [torch.rot90(up, k, dims=(0, 1)) for k in range(len(_ROTATIONS))]


def srm_kernels() -> Tensor:
    """The 30 fixed SRM high-pass kernels, shape (30, 5, 5), named by :data:`SRM_KERNEL_NAMES`.

    Correlation convention (as ``F.conv2d``): tap ``[2 + dy, 2 + dx]`` weighs the pixel at offset
    ``(dy, dx)`` from the output pixel. Every kernel has a negative centre ("neighbours minus centre",
    the sign of eqs. 4 and 12) and sums to zero.
    """
    first = [_from_taps({(0, 0): -1.0, d: 1.0}) for d in _DIRECTIONS.values()]
    second = [_from_taps({(-dy, -dx): 1.0, (0, 0): -2.0, (dy, dx): 1.0}) / 2 for dy, dx in _AXES.values()]
    third = [
        _from_taps({(-dy, -dx): 1.0, (0, 0): -3.0, (dy, dx): 3.0, (2 * dy, 2 * dx): -1.0}) / 3
        for dy, dx in _DIRECTIONS.values()
    ]
    kernels = [
        *first,
        *second,
        *third,
        _centred(_SQUARE_3X3) / 4,
        *(k / 4 for k in _edge(_SQUARE_3X3)),
        _centred(_SQUARE_5X5) / 12,
        *(k / 12 for k in _edge(_SQUARE_5X5)),
    ]
    return torch.stack(kernels)


def round_ste(x: Tensor) -> Tensor:
    """Round in the forward pass, identity in the backward pass (straight-through estimator), so
    quantised residuals still pass gradients to the learnable weights."""
    return x + (torch.round(x) - x).detach()


def quantize_truncate(residual: Tensor, step: float, threshold: float, quantize: bool = True) -> Tensor:
    """Eq. 5, ``trunc_T(round(R / c))``; rounding is straight-through, truncation a clamp to [-T, T]."""
    scaled = residual / step
    if quantize:
        scaled = round_ste(scaled)
    return scaled.clamp(-threshold, threshold)


class SRMFrontend(nn.Module):
    """Grey conversion, fixed + learned + min/max residuals, eq. 5, then a 1x1 projection.

    Settings:
        learned_residuals: how many learnable residual maps (eq. 12); 0 disables them.
        learned_kernel_size: 3 (8 neighbours) or 5 (24 neighbours) for the learnable residuals.
        quant_step: the quantisation step ``c`` of eq. 5, in 0..255 grey levels.
        truncation: the threshold ``T`` of eq. 5; maps are clamped to [-T, T].
        quantize: round (straight-through) before truncation; ``False`` keeps ``trunc_T(R / c)``.
        concat_image: also feed the input image to the projection, so the backbone still sees content.
        out_channels: channels handed to the backbone (3 for ImageNet backbones).
    """

    def __init__(
        self,
        *,
        learned_residuals: int = 8,
        learned_kernel_size: int = 3,
        quant_step: float = 1.0,
        truncation: float = 2.0,
        quantize: bool = True,
        concat_image: bool = True,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        if learned_kernel_size not in (3, 5):
            raise ValueError(f"learned_kernel_size must be 3 or 5, got {learned_kernel_size}")
        if learned_residuals < 0 or out_channels < 1:
            raise ValueError("learned_residuals must be >= 0 and out_channels >= 1")
        if quant_step <= 0 or truncation <= 0:
            raise ValueError("quant_step and truncation must be positive")
        self.learned_kernel_size = learned_kernel_size
        self.quant_step = quant_step
        self.truncation = truncation
        self.quantize = quantize
        self.concat_image = concat_image

        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.register_buffer("fixed_kernels", srm_kernels())

        # Eq. 12 weights, neighbours in row-major order without the centre. They start near the
        # "mean of the neighbours" predictor; the noise makes the maps differ from one another.
        neighbours = learned_kernel_size**2 - 1
        self.residual_weights = nn.Parameter(
            (1.0 + 0.5 * torch.randn(learned_residuals, neighbours)) / neighbours
        )

        index = {name: i for i, name in enumerate(SRM_KERNEL_NAMES)}
        self._groups = tuple(tuple(index[m] for m in members) for _, members in MINMAX_GROUPS)
        self.residual_map_names: tuple[str, ...] = (
            *SRM_KERNEL_NAMES,
            *(f"learned_{i}" for i in range(learned_residuals)),
            *(f"{op}_{name}" for name, _ in MINMAX_GROUPS for op in ("min", "max")),
        )
        """One name per channel of :meth:`residual_maps`."""

        image_channels = 3 if concat_image else 0
        self.projection = nn.Conv2d(len(self.residual_map_names) + image_channels, out_channels, 1)
        if concat_image and out_channels == image_channels:
            self._init_projection_as_identity()

    def _init_projection_as_identity(self) -> None:
        """Start as the identity on the image plus a small residual term, so a pretrained backbone
        first sees the input it was trained on, and the residuals still receive gradients."""
        n_maps = len(self.residual_map_names)
        with torch.no_grad():
            weight = self.projection.weight
            nn.init.normal_(weight[:, :n_maps], std=0.01)
            weight[:, n_maps:] = torch.eye(weight.shape[0]).view_as(weight[:, n_maps:])
            self.projection.bias.zero_()

    def learned_kernels(self) -> Tensor:
        """Kernels of eq. 12 as (K, 5, 5): the weights around a centre tap of ``-sum(w)``, so the
        response is ``sum_p w_p (Z_p - Z_centre)`` and is zero on a constant image by construction."""
        w = self.residual_weights
        centre = w.shape[1] // 2
        flat = torch.cat([w[:, :centre], -w.sum(dim=1, keepdim=True), w[:, centre:]], dim=1)
        size = self.learned_kernel_size
        pad = (KERNEL_SIZE - size) // 2
        return F.pad(flat.view(-1, size, size), (pad, pad, pad, pad))

    def to_grey255(self, x: Tensor) -> Tensor:
        """Undo the ImageNet normalisation and average channels: (B, 3, H, W) -> (B, 1, H, W) in 0..255."""
        return (x * self.std + self.mean).mean(dim=1, keepdim=True) * 255.0

    def raw_residuals(self, x: Tensor) -> Tensor:
        """All residual maps before eq. 5, in grey levels, channels named by ``residual_map_names``."""
        grey = self.to_grey255(x)
        kernels = torch.cat([self.fixed_kernels, self.learned_kernels()]).unsqueeze(1)
        pad = KERNEL_SIZE // 2
        linear = F.conv2d(F.pad(grey, (pad, pad, pad, pad), mode="replicate"), kernels)
        fixed = linear[:, : len(SRM_KERNEL_NAMES)]
        nonlinear = []
        for members in self._groups:
            group = fixed[:, list(members)]
            nonlinear += [group.amin(dim=1), group.amax(dim=1)]
        return torch.cat([linear, torch.stack(nonlinear, dim=1)], dim=1)

    def residual_maps(self, x: Tensor) -> Tensor:
        """All residual maps after quantisation and truncation (eq. 5): what the projection sees."""
        return quantize_truncate(self.raw_residuals(x), self.quant_step, self.truncation, self.quantize)

    def forward(self, x: Tensor) -> Tensor:
        maps = self.residual_maps(x)
        if self.concat_image:
            maps = torch.cat([maps, x], dim=1)
        return self.projection(maps)


class FrontendModel(nn.Module):
    """Runs ``frontend`` then ``backbone``; unknown attributes are looked up on the backbone.

    The lookup lets training code keep reading backbone attributes (``fc``, ``classifier``,
    ``aux_logits``...) through the wrapper; assignments still land on the wrapper. Whatever the
    backbone returns (a torchvision ``InceptionOutputs`` in training mode included) is returned as is.
    """

    def __init__(self, frontend: nn.Module, backbone: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor | InceptionOutputs:
        return self.backbone(self.frontend(x))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("frontend", "backbone"):
                raise
            return getattr(self.backbone, name)

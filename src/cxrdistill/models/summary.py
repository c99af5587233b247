"""Size and cost of a model: parameters, depth, FLOPs, measured (``cxrdistill models`` puts the paper's Table I beside).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per multiply-add.
The paper's "computation" column matches multiply-accumulates (MACs), so both are reported.
Depth is counted as the number of weight layers (``Conv2d`` + ``Linear``) on the main path, auxiliary
heads excluded. The paper's figures follow no single rule we could find (VGG16 "24", InceptionV3
"166"), so they are printed beside ours rather than reproduced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cxrdistill.config import ModelConfig
from cxrdistill.models.factory import create_model
from cxrdistill.models.registry import model_spec


@dataclass(frozen=True)
class ModelSummary:
    name: str
    input_size: int
    params_m: float
    trainable_params_m: float
    weight_layers: int
    gflops: float
    gmacs: float

    def as_dict(self) -> dict:
        return asdict(self)


def count_flops(model: nn.Module, input_size: int, batch: int = 1) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(batch, 3, input_size, input_size))
    return counter.get_total_flops()


def weight_layers(model: nn.Module) -> int:
    return sum(
        isinstance(m, (nn.Conv2d, nn.Linear)) for name, m in model.named_modules() if "AuxLogits" not in name
    )


def summarize(config: ModelConfig, input_size: int | None = None) -> ModelSummary:
    spec = model_spec(config.name)
    size = max(input_size or spec.input_size, spec.min_input_size)  # a smaller request is raised to the minimum
    model = create_model(config, image_size=size)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = count_flops(model, size)
    return ModelSummary(
        name=config.name,
        input_size=size,
        params_m=params / 1e6,
        trainable_params_m=trainable / 1e6,
        weight_layers=weight_layers(model),
        gflops=flops / 1e9,
        gmacs=flops / 2e9,
    )

"""``create_model``: a registry name plus a model config in, a ready-to-train network out."""

from __future__ import annotations

from torch import nn

from cxrdistill.config import ConfigError, ModelConfig
from cxrdistill.models.registry import model_spec
from cxrdistill.models.weights import initialise


def create_model(config: ModelConfig, num_classes: int = 2, image_size: int | None = None) -> nn.Module:
    """Build, initialise (scratch / ImageNet / file), optionally freeze, and add the configured front-end."""
    spec = model_spec(config.name)
    model = spec.build(num_classes, config.dropout, config.init != "scratch", input_size(config, image_size))
    initialise(model, spec, config.init)
    if config.transfer == "freeze_backbone":
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith(spec.head)
    if config.frontend == "srm":
        from cxrdistill.models.srm import FrontendModel, SRMFrontend

        try:
            frontend = SRMFrontend(**config.frontend_options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.frontend_options: {error}") from None
        model = FrontendModel(frontend, model)
    elif config.frontend != "none":
        raise ValueError(f"unknown model.frontend {config.frontend!r}; use 'none' or 'srm'")
    return model


def input_size(config: ModelConfig, override: int | None = None) -> int:
    spec = model_spec(config.name)
    size = override or spec.input_size
    if size < spec.min_input_size:
        raise ConfigError(f"{spec.name} needs inputs of at least {spec.min_input_size}px, got {size}")
    return size

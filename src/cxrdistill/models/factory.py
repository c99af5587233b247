"""``create_model``: a registry name plus a model config in, a ready-to-train network out.

``model_build`` turns a config into the :class:`ModelBuild` record that checkpoints store, and
``rebuild_model`` turns such a record back into the same network, so that a checkpoint reloads as
exactly the model that was trained, whatever its initialisation was.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cxrdistill.config import ConfigError, ModelConfig
from cxrdistill.models.registry import ModelBuild, model_spec
from cxrdistill.models.weights import initialise


def model_build(config: ModelConfig, num_classes: int = 2, image_size: int | None = None) -> ModelBuild:
    """The build a config asks for; pretrained inits switch on the architecture's ImageNet input transform."""
    spec = model_spec(config.name)
    size = input_size(config, image_size)
    return ModelBuild(
        architecture=spec.name,
        num_classes=num_classes,
        input_size=size,
        dropout=config.dropout,
        imagenet_input=spec.imagenet_input_transform and config.init != "scratch",
        aux_head=spec.aux_head_min_size is not None and size >= spec.aux_head_min_size,
        frontend=config.frontend,
        frontend_options=dict(config.frontend_options),
    )


def create_model(config: ModelConfig, num_classes: int = 2, image_size: int | None = None) -> nn.Module:
    """Build, initialise (scratch / ImageNet / file), optionally freeze, and add the configured front-end."""
    build = model_build(config, num_classes, image_size)
    spec = model_spec(build.architecture)
    backbone = spec.build(build)
    initialise(backbone, spec, config.init)
    if config.transfer == "freeze_backbone":
        for name, parameter in backbone.named_parameters():
            parameter.requires_grad = name.startswith(spec.head)
    return with_frontend(backbone, build)


def rebuild_model(build: ModelBuild) -> nn.Module:
    """The network ``build`` describes, with fresh weights for a checkpoint's to replace."""
    return with_frontend(model_spec(build.architecture).build(build), build)


def with_frontend(backbone: nn.Module, build: ModelBuild) -> nn.Module:
    if build.frontend == "srm":
        from cxrdistill.models.srm import FrontendModel, SRMFrontend

        try:
            frontend = SRMFrontend(**build.frontend_options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.frontend_options: {error}") from None
        return FrontendModel(frontend, backbone)
    if build.frontend != "none":
        raise ValueError(f"unknown model.frontend {build.frontend!r}; use 'none' or 'srm'")
    return backbone


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except that BatchNorm layers whose parameters are all frozen stay in eval mode.

    A frozen backbone (``transfer: freeze_backbone``) must keep its BatchNorm running statistics too:
    in training mode they would drift to the new data while the weights around them stay fixed.
    """
    model.train()
    for module in model.modules():
        parameters = list(module.parameters(recurse=False))
        if isinstance(module, _BatchNorm) and parameters and not any(p.requires_grad for p in parameters):
            module.eval()
    return model


def network_normalization(build: ModelBuild) -> dict[str, list[float]] | None:
    """The normalisation the network re-maps its ImageNet-normalised input to in its first layer, if any.

    Recorded in checkpoint sidecars (and so in exported ONNX metadata) beside the input normalisation, so a
    reader sees both what to feed the model and what its weights were trained on.
    """
    normalization = model_spec(build.architecture).weights_normalization
    if not build.imagenet_input or normalization is None:
        return None
    mean, std = normalization
    return {"mean": list(mean), "std": list(std)}


def input_size(config: ModelConfig, override: int | None = None) -> int:
    """The input size a model is built for: ``override`` or the architecture's own; below its minimum is an error."""
    spec = model_spec(config.name)
    size = override or spec.input_size
    if size < spec.min_input_size:
        raise ConfigError(f"{spec.name} needs inputs of at least {spec.min_input_size}px, got {size}")
    return size

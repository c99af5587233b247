"""Model zoo: a registry of torchvision architectures with two-class heads, and ways to initialise them."""

from cxrdistill.models import zoo as _zoo  # noqa: F401  (registers the architectures)
from cxrdistill.models.factory import (
    create_model,
    input_size,
    model_build,
    network_normalization,
    rebuild_model,
    train_mode,
)
from cxrdistill.models.registry import MODELS, ModelBuild, ModelSpec, model_spec, register_model
from cxrdistill.models.weights import WeightsNotAvailableError

__all__ = ["MODELS", "ModelBuild", "ModelSpec", "WeightsNotAvailableError", "create_model", "input_size",
           "model_build", "model_spec", "network_normalization", "rebuild_model", "register_model", "train_mode"]

"""A model as it is served: the network with its stored temperature and site prior, and the warning every
loader gives when that model never saw a real X-ray.

Evaluation, prediction, the web service and ONNX export load checkpoints through :func:`load_served_model`
and exported models through the ONNX reader of :mod:`cxrdistill.deployment.predict`; both call
:func:`warn_if_synthetic`, so the four commands warn alike. How the temperature and the threshold are
fitted is :mod:`cxrdistill.evaluation.operating_point`'s job; this module only applies what is stored.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cxrdistill.errors import InvalidArgumentError
from cxrdistill.runtime.checkpoint import model_from_checkpoint


class SyntheticDataWarning(UserWarning):
    """The model was trained on the project's made-up images, not on X-rays: its outputs mean nothing clinically."""


def warn_if_synthetic(metadata: dict[str, Any], source: str | Path) -> None:
    """Warn when the metadata (of a checkpoint or an exported model) says it was trained on synthetic images."""
    if metadata.get("synthetic_data"):
        warnings.warn(f"{source} was trained on SYNTHETIC images (made-up data, not X-rays); its predictions and "
                      "metrics say nothing about real chest X-rays", SyntheticDataWarning, stacklevel=3)


class TemperatureScaled(nn.Module):
    """A network whose logits are divided by a fixed temperature: the calibrated model, as served and exported."""

    def __init__(self, network: nn.Module, temperature: float) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        self.network = network
        self.temperature = temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images) / self.temperature


def stored_temperature(metadata: dict[str, Any]) -> float:
    """The checkpoint's fitted temperature, 1.0 when it was never calibrated."""
    return float((metadata.get("calibration") or {}).get("temperature", 1.0))



def load_served_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The checkpoint's network with its stored temperature and site prior applied: what evaluation and
    deployment run."""
    model, metadata = model_from_checkpoint(path)
    warn_if_synthetic(metadata, path)
    temperature = stored_temperature(metadata)
    served = model if temperature == 1.0 else TemperatureScaled(model, temperature)
    shift = metadata.get("prior_shift")
    return (served if shift is None else PriorShifted(served, shift["model_prior"], shift["site_prior"])), metadata


# -- the share of pneumonia at a site (prior shift) ---------------------------------------------
def prior_log_ratios(model_prior: float, site_prior: float) -> np.ndarray:
    """Per class ``log(site share / share the model's outputs assume)``: added to the logits, it turns the
    model's posterior into the one for the site's share of pneumonia (Bayes' rule; Saerens et al. 2002)."""
    for name, value in (("model prior", model_prior), ("site prior", site_prior)):
        if not 0.0 < value < 1.0:
            raise InvalidArgumentError(f"the {name} must be a share strictly between 0 and 1, got {value}")
    return np.log([(1.0 - site_prior) / (1.0 - model_prior), site_prior / model_prior])


class PriorShifted(nn.Module):
    """A network whose logits are moved to a site's share of pneumonia: the adapted model, as served and exported."""

    def __init__(self, network: nn.Module, model_prior: float, site_prior: float) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("log_ratios", torch.tensor(prior_log_ratios(model_prior, site_prior),
                                                        dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images) + self.log_ratios

"""Adapting a trained model to a site from its unlabelled films: the site's share of pneumonia, BatchNorm statistics.

Two things about a new site can be learnt without a single label:

* **its share of pneumonia** (the prior). The model's outputs assume the share it was trained for (0.5
  with a class-balanced loss or sampler); :func:`estimate_prior_em` estimates the site's share from the
  model's own probabilities on the site's films by EM (Saerens, Latinne & Decaestecker 2002), and
  Bayes' rule moves every probability to it (:class:`cxrdistill.runtime.served.PriorShifted`);
* **its images' statistics**, for networks with BatchNorm: AdaBN (Li et al. 2016) re-estimates each
  BatchNorm layer's running mean and variance on the site's films, leaving every weight as trained
  (:func:`reestimate_batchnorm`). AlexNet has no BatchNorm, so for it this step is skipped and says so.

:func:`adapt_checkpoint` does both and writes a new checkpoint whose sidecar records what was adapted,
on how many images (and a digest of their relative paths and contents, never absolute paths), the
prior the model assumed and the site's estimated prior. Every consumer of checkpoints (evaluate,
predict, serve, export) loads it through :func:`cxrdistill.runtime.served.load_served_model`,
so the corrected probabilities are what they all see; the decision threshold is the one in use before
(0.5 by default), now applied to probabilities for the site's prior.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cxrdistill.config import config_from_dict
from cxrdistill.data.io import is_image_file
from cxrdistill.data.preprocess import Preprocessing
from cxrdistill.errors import InvalidArgumentError
from cxrdistill.evaluation.operating_point import INTERNAL_SPLITS, threshold_in_use
from cxrdistill.files import file_digest
from cxrdistill.models import rebuild_model
from cxrdistill.runtime.checkpoint import (
    SIDE_FILES_KEY,
    check_class_names,
    checkpoint_files,
    load_checkpoint,
    save_weights,
    saved_model_build,
)
from cxrdistill.runtime.device import resolve_device
from cxrdistill.runtime.served import TemperatureScaled, stored_temperature

BALANCED_TRAINING: frozenset[str] = frozenset({"loss", "sampler"})
"""``train.class_balance`` values under which a model's outputs assume equal classes."""


@dataclass(frozen=True)
class PriorEstimate:
    site_prior: float
    iterations: int
    converged: bool


def estimate_prior_em(prob_positive: np.ndarray, model_prior: float, tolerance: float = 1e-6,
                      max_iterations: int = 1000) -> PriorEstimate:
    """The share of positives in an unlabelled set, from a model's probabilities trained under ``model_prior``.

    EM of Saerens et al. (2002): reweight each posterior by the ratio of the current prior estimate to
    the training prior (E step), take the mean corrected posterior as the new prior (M step), repeat.
    It is the maximum-likelihood prior when the model's probabilities are calibrated for its training prior.
    """
    p = np.asarray(prob_positive, dtype=float)
    if p.ndim != 1 or len(p) == 0 or not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise InvalidArgumentError(f"need a non-empty vector of probabilities in [0, 1], got shape {p.shape}")
    if not 0.0 < model_prior < 1.0:
        raise InvalidArgumentError(f"the model prior must be strictly between 0 and 1, got {model_prior}")
    prior = model_prior
    for iteration in range(1, max_iterations + 1):
        positive = p * prior / model_prior
        negative = (1.0 - p) * (1.0 - prior) / (1.0 - model_prior)
        updated = float(np.mean(positive / (positive + negative)))
        updated = min(max(updated, 1e-6), 1.0 - 1e-6)  # a set of one class would otherwise reach 0 or 1
        if abs(updated - prior) < tolerance:
            return PriorEstimate(updated, iteration, True)
        prior = updated
    return PriorEstimate(prior, max_iterations, False)


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, loader: DataLoader, device: torch.device) -> int:
    """AdaBN: replace every BatchNorm layer's running statistics by those of the images in ``loader``.

    Statistics are accumulated as a plain average over all batches (``momentum=None``); everything else
    runs in eval mode (dropout off, no auxiliary heads), and no weight changes. Returns the number of
    BatchNorm layers re-estimated (0 for networks without any, e.g. AlexNet, which are left untouched).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    model.eval().to(device)
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    try:
        for images in loader:
            model(images.to(device))
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.eval()
    return len(layers)


class SiteImages(Dataset):
    """Unlabelled image files, made into model inputs exactly as inference makes them."""

    def __init__(self, files: list[Path], preprocessing: Preprocessing) -> None:
        self.files, self.preprocessing = files, preprocessing

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.preprocessing(self.files[index])


def site_files(images: str | Path) -> list[Path]:
    """Every image file under ``images`` (recursively, sorted); class folders, if any, are not read as labels."""
    folder = Path(images)
    if not folder.is_dir():
        raise InvalidArgumentError(f"--images {folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and is_image_file(p))
    if not files:
        raise InvalidArgumentError(f"{folder} holds no image files (.jpeg/.jpg/.png/.tif/.bmp/.dcm)")
    return files


def files_digest(files: list[Path], root: Path) -> str:
    """SHA-256 over each file's path relative to ``root`` and its content digest: names the set, reveals no paths."""
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(f"{file.relative_to(root).as_posix()}\t{file_digest(file)}\n".encode())
    return digest.hexdigest()


def model_prior(metadata: dict[str, Any], training_prior: float | None = None) -> tuple[float, str]:
    """The share of pneumonia the model's outputs assume, and where that figure comes from."""
    if training_prior is not None:
        return float(training_prior), "given"
    balance = config_from_dict(metadata["config"]).train.class_balance
    if balance in BALANCED_TRAINING:
        return 0.5, f"class-balanced training (train.class_balance={balance})"
    raise InvalidArgumentError(f"the model was trained without class balance (train.class_balance={balance}); its "
                               "outputs assume the training split's share of pneumonia: give it (--training-prior)")


@dataclass(frozen=True)
class AdaptationResult:
    checkpoint: Path
    adaptation: dict[str, Any]
    prior_shift: dict[str, Any] | None


def adapt_checkpoint(checkpoint: str | Path, images: str | Path | list[Path], out: str | Path, prior: bool = True,
                     batchnorm: bool = True, training_prior: float | None = None, device: str = "auto",
                     batch_size: int = 32, root: str | Path | None = None) -> AdaptationResult:
    """Adapt ``checkpoint`` to a site's unlabelled films ``images`` (a folder, or files under ``root``); write ``out``.

    AdaBN runs first (when asked for and the network has BatchNorm), then the site's prior is estimated
    from the (re-normalised, temperature-scaled) network's probabilities on the same films.
    """
    checkpoint, out = Path(checkpoint), checkpoint_files(out).weights
    if out.resolve() == checkpoint_files(checkpoint).weights.resolve():
        raise InvalidArgumentError(f"adapt writes a new checkpoint; choose an --out other than {checkpoint}")
    if not (prior or batchnorm):
        raise InvalidArgumentError("nothing to adapt: both the prior and the BatchNorm statistics were switched off")
    if isinstance(images, (str, Path)):
        root, files = Path(images), site_files(images)
    else:
        files, root = list(images), Path(root) if root is not None else None
        if root is None or not files:
            raise InvalidArgumentError("adapting on a list of files needs the files and the folder they lie under")
    payload = load_checkpoint(checkpoint)
    metadata = payload["metadata"]
    check_class_names(metadata, str(checkpoint))
    point = metadata.get("operating_point") or {}
    if metadata.get("adaptation") or metadata.get("calibration") and point.get("chosen_on") not in INTERNAL_SPLITS:
        raise InvalidArgumentError(f"{checkpoint} was already fitted to a site; adapt the trained checkpoint instead")
    network = rebuild_model(saved_model_build(payload))
    network.load_state_dict(payload["model_state"])
    loader = DataLoader(SiteImages(files, Preprocessing.of(metadata)), batch_size=batch_size)
    torch_device = resolve_device(device)
    adapted: list[str] = []
    layers = reestimate_batchnorm(network, loader, torch_device) if batchnorm else 0
    if layers:
        adapted.append("batchnorm")
    record: dict[str, Any] = {
        "images": len(files), "files_sha256": files_digest(files, root), "adapted_from": checkpoint.name,
        "batchnorm_layers": layers,
        "batchnorm": ("re-estimated on the site's images (AdaBN)" if layers else
                      f"{metadata['architecture']} has no BatchNorm layers: nothing to re-estimate" if batchnorm
                      else "not asked for"),
    }
    shift = None
    if prior:
        temperature = stored_temperature(metadata)
        served = network if temperature == 1.0 else TemperatureScaled(network, temperature)
        probs = site_probabilities(served, loader, torch_device)
        assumed, source = model_prior(metadata, training_prior)
        estimate = estimate_prior_em(probs, assumed)
        shift = {"model_prior": assumed, "model_prior_source": source, "site_prior": estimate.site_prior,
                 "estimator": "em (Saerens et al. 2002)", "iterations": estimate.iterations,
                 "converged": estimate.converged, "images": len(files),
                 "mean_probability_before": float(np.mean(probs))}
        adapted.append("prior")
    record["adapted"] = adapted
    refit = sorted(metadata.get(SIDE_FILES_KEY) or {})  # e.g. the out-of-distribution check: fitted on other outputs
    if refit:
        record["dropped"] = {key: "fitted on the unadapted model; fit it again on the adapted one" for key in refit}
    metadata = {k: v for k, v in metadata.items() if k not in (*refit, SIDE_FILES_KEY)}
    updates: dict[str, Any] = {"adaptation": record}
    if shift is not None:
        updates["prior_shift"] = shift
        in_use = threshold_in_use(metadata)
        updates["operating_point"] = {
            "threshold": in_use.threshold, "policy": f"{in_use.rule} at the site's prior",
            "chosen_on": "site images (unlabelled)", "count": len(files),
            "prior_corrected_from": metadata.get("operating_point"),
        }
    files_written = save_weights(out, {k: v.cpu() for k, v in network.state_dict().items()},
                                 {**metadata, **updates})
    return AdaptationResult(files_written.weights, record, shift)


@torch.no_grad()
def site_probabilities(model: nn.Module, loader: DataLoader, device: torch.device) -> np.ndarray:
    """PNEUMONIA probability per image of ``loader``, the model in eval mode."""
    model.eval().to(device)
    return torch.cat([torch.softmax(model(images.to(device)).float(), dim=1)[:, 1].cpu() for images in loader]).numpy()

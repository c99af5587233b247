"""Out-of-distribution check: how far an image lies from the training images, in the model's own features.

A classifier answers for any input: a radiograph of a lower leg, a CT slice or a photograph gets a
pneumonia probability like a chest film does. The check scores each image and flags those scoring above
a threshold as "not like the training images"; their label is still shown, marked.

* **Score** (:data:`OOD_SCORES`): ``mahalanobis`` (Lee et al. 2018): class-conditional means with one
  shared covariance of the training images' features, projected on their first principal components
  (fp32, at most :data:`DEFAULT_DIMS`), and the distance to the nearest class mean; or ``energy``
  (Liu et al. 2020): ``-logsumexp(logits)``, which needs no statistics.
* **Features** (:data:`FEATURE_SOURCES`): ``pooled`` — the global average of the block the Grad-CAM maps
  come from (the last convolution's resolution: AlexNet's last ``Conv2d``, InceptionV3's ``Mixed_7c``);
  ``penultimate`` — the input of the last linear layer (AlexNet's 4096 values).
* **Fitted** on the run's training split, the **threshold** at a percentile (default 99) of the scores on
  its validation split. The statistics go to ``NAME.ood.safetensors`` beside the checkpoint, recorded with
  their SHA-256 in the sidecar (``side_files.ood``); the sidecar's ``ood`` entry holds the settings, the
  threshold and where they were fitted.

:class:`ScoredModel` runs the network once and returns logits and score: prediction, the service and the
ONNX graph (which outputs ``ood_score``) all use it, so they flag the same images.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import nn
from torch.utils.data import DataLoader

from cxrdistill.config import DataConfig
from cxrdistill.data.dataset import build_dataset, default_num_workers, resolve_split
from cxrdistill.data.layout import ImageRecord
from cxrdistill.deployment.heatmap import find_target_layer
from cxrdistill.errors import CxrDistillError, InvalidArgumentError
from cxrdistill.evaluation.evaluate import load_for_evaluation, records_for
from cxrdistill.registry import Registry
from cxrdistill.runtime.checkpoint import (
    SIDE_FILES_KEY,
    load_side_tensors,
    read_metadata,
    save_side_tensors,
    update_checkpoint_metadata,
)
from cxrdistill.runtime.served import PriorShifted, TemperatureScaled

OOD_KEY = "ood"
"""The sidecar entry (and the ``side_files`` kind) of the check."""
DEFAULT_SCORE = "mahalanobis"
DEFAULT_FEATURES = "pooled_stats"
DEFAULT_DIMS = 64
DEFAULT_PERCENTILE = 99.0
FLAG_TEXT = "not like the training images"


class OodNotFittedError(CxrDistillError, ValueError):
    """A model without a fitted out-of-distribution check where one is needed."""


# -- features ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSource:
    """Where a network's feature vector is read: the module ``locate`` names, its input or its output."""

    locate: Callable[[nn.Module, int], str]
    reads_input: bool
    reduce: Callable[[torch.Tensor], torch.Tensor]
    """The captured tensor -> one ``(N, D)`` vector per image."""
    description: str


def _last_linear(network: nn.Module, input_size: int) -> str:
    names = [name for name, module in network.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise InvalidArgumentError(f"{type(network).__name__} has no linear layer to read penultimate features from")
    return names[-1]


def _last_conv_block(network: nn.Module, input_size: int) -> str:
    return find_target_layer(network, input_size)[0]


def _spatial_mean_and_std(maps: torch.Tensor) -> torch.Tensor:
    """Per channel, the mean and the spread over positions: a flat or a noisy picture differs in the spread."""
    return torch.cat([maps.mean(dim=(2, 3)), maps.flatten(2).std(dim=2, correction=0)], dim=1)  # 0 on a 1x1 map


FEATURE_SOURCES: Registry[FeatureSource] = Registry("feature source")
FEATURE_SOURCES.register("penultimate")(FeatureSource(
    _last_linear, True, lambda features: features.flatten(1), "input of the last linear layer"))
FEATURE_SOURCES.register("pooled")(FeatureSource(
    _last_conv_block, False, lambda maps: maps.mean(dim=(2, 3)), "global average of the last convolution's block"))
FEATURE_SOURCES.register("pooled_stats")(FeatureSource(
    _last_conv_block, False, _spatial_mean_and_std,
    "per-channel mean and standard deviation over positions of the last convolution's block"))


def base_network(served: nn.Module) -> nn.Module:
    """The network inside a temperature-scaled or prior-shifted model (layer names are the checkpoint's own)."""
    while isinstance(served, (TemperatureScaled, PriorShifted)):
        served = served.network
    return served


class FeatureTap(nn.Module):
    """The served model's logits and one layer's feature vector from one forward pass (traceable for ONNX)."""

    def __init__(self, served: nn.Module, layer: str, source: FeatureSource) -> None:
        super().__init__()
        self.served = served
        self.reduce = source.reduce
        self._captured: list[torch.Tensor] = []
        self._active = False  # other users of the network (Grad-CAM) run it without capturing
        module = base_network(served).get_submodule(layer)
        if source.reads_input:
            module.register_forward_pre_hook(lambda _m, args: self._capture(args[0]))
        else:
            module.register_forward_hook(lambda _m, _args, output: self._capture(output))

    def _capture(self, features: torch.Tensor) -> None:
        if self._active:
            self._captured.append(features)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._active = True
        try:
            logits = self.served(images)
            features = self._captured[-1]
        finally:
            self._active = False
            self._captured.clear()
        return logits, self.reduce(features).float()


# -- scores --------------------------------------------------------------------------------------
class MahalanobisScore(nn.Module):
    """Squared Mahalanobis distance to the nearest class mean in the projected feature space."""

    def __init__(self, center: torch.Tensor, components: torch.Tensor, class_means: torch.Tensor,
                 precision: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("center", center.float())
        self.register_buffer("components", components.float())
        self.register_buffer("class_means", class_means.float())
        self.register_buffer("precision", precision.float())

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        projected = (features - self.center) @ self.components.T  # (N, K)
        offsets = projected.unsqueeze(1) - self.class_means.unsqueeze(0)  # (N, C, K)
        distances = ((offsets @ self.precision) * offsets).sum(dim=2)  # (N, C)
        return distances.min(dim=1).values

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"center": self.center, "components": self.components, "class_means": self.class_means,
                "precision": self.precision}


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray, dims: int) -> MahalanobisScore:
    """Principal components of the training features, class means and a shared (Ledoit-Wolf) precision there."""
    features = np.asarray(features, dtype=np.float64)
    center = features.mean(axis=0)
    keep = max(1, min(dims, features.shape[1], len(features) - 1))
    _, _, right = np.linalg.svd(features - center, full_matrices=False)
    components = right[:keep]
    projected = (features - center) @ components.T
    classes = np.unique(labels)
    class_means = np.stack([projected[labels == c].mean(axis=0) for c in classes])
    within = projected - class_means[np.searchsorted(classes, labels)]
    precision = LedoitWolf(assume_centered=True).fit(within).precision_
    return MahalanobisScore(*(torch.from_numpy(np.asarray(a, dtype=np.float32))
                              for a in (center, components, class_means, precision)))


class EnergyScore(nn.Module):
    """Negative free energy of the logits (higher: less like anything the network was trained on)."""

    def forward(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return -torch.logsumexp(logits.float(), dim=1)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}


@dataclass(frozen=True)
class OodScoreKind:
    """How one score is fitted on training features (and labels) and rebuilt from its stored tensors."""

    fit: Callable[[np.ndarray, np.ndarray, int], nn.Module]
    rebuild: Callable[[dict[str, torch.Tensor]], nn.Module]
    description: str
    needs_training_features: bool = True
    """``False``: the score is computed from the logits alone, so fitting skips the pass over the train split."""


OOD_SCORES: Registry[OodScoreKind] = Registry("out-of-distribution score")
OOD_SCORES.register("mahalanobis")(OodScoreKind(
    fit_mahalanobis, lambda tensors: MahalanobisScore(**tensors),
    "squared Mahalanobis distance to the nearest class mean (shared covariance, principal components)"))
OOD_SCORES.register("energy")(OodScoreKind(
    lambda features, labels, dims: EnergyScore(), lambda tensors: EnergyScore(), "negative energy of the logits",
    needs_training_features=False))


class ScoredModel(nn.Module):
    """``images -> (logits, ood_score)``: the served model and its out-of-distribution score in one pass."""

    def __init__(self, tap: FeatureTap, score: nn.Module) -> None:
        super().__init__()
        self.tap = tap
        self.score = score

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self.tap(images)
        return logits, self.score(features, logits)


def scored_model(served: nn.Module, record: dict[str, Any], score: nn.Module) -> ScoredModel:
    """Wrap ``served`` with the layer and score a fitted record names."""
    source = FEATURE_SOURCES.get(record["features"])
    return ScoredModel(FeatureTap(served, record["layer"], source), score).eval()


def load_ood(checkpoint: str | Path, served: nn.Module, metadata: dict[str, Any]) -> ScoredModel | None:
    """The checkpoint's fitted check around ``served``; ``None`` when it has none."""
    record = metadata.get(OOD_KEY)
    if not record:
        return None
    side = (metadata.get(SIDE_FILES_KEY) or {}).get(OOD_KEY, {})
    tensors = load_side_tensors(checkpoint, OOD_KEY, side) if side else {}
    try:
        score = OOD_SCORES.get(record["score"]).rebuild(tensors)
    except (KeyError, TypeError) as error:
        raise CxrDistillError(f"{checkpoint}: its out-of-distribution record is unusable ({error}); fit it again "
                              f"with `cxrdistill fit-ood {checkpoint}`") from error
    return scored_model(served, record, score)


# -- fitting -------------------------------------------------------------------------------------
@torch.no_grad()
def extract(tap: FeatureTap, records: list[ImageRecord], data_config: DataConfig, input_size: int,
            batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, logits and labels of ``records`` (unaugmented, as evaluated; unreadable images skipped)."""
    dataset = build_dataset(records, data_config, input_size, augment=False, progress=False)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=default_num_workers(data_config.num_workers))
    features, logits, labels = [], [], []
    for batch in loader:
        batch_logits, batch_features = tap(batch["image"])
        features.append(batch_features.numpy())
        logits.append(batch_logits.float().numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(features), np.concatenate(logits), np.concatenate(labels)


@dataclass(frozen=True)
class OodFit:
    """A fitted check: its sidecar record and the validation scores its threshold came from."""

    record: dict[str, Any]
    val_scores: np.ndarray


def fit_ood(checkpoint: str | Path, data: str | Path | None = None, score: str = DEFAULT_SCORE,
            features: str = DEFAULT_FEATURES, dims: int = DEFAULT_DIMS, percentile: float = DEFAULT_PERCENTILE,
            max_train_images: int | None = None, seed: int = 0, local_data: DataConfig | None = None) -> OodFit:
    """Fit the check on the run's training split, set its threshold on the validation split, store both.

    ``data`` is the run's data root (default: the one in its config). ``max_train_images`` fits on a random
    sample of the training split (seeded), for speed. ``local_data`` (a run's own settings, right after
    training) reads images through that run's cache. The checkpoint's sidecar is rewritten in place and
    ``NAME.ood.safetensors`` written beside it.
    """
    if not 0.0 < percentile < 100.0:
        raise InvalidArgumentError(f"percentile must be between 0 and 100, got {percentile}")
    if dims < 1:
        raise InvalidArgumentError(f"dims must be at least 1, got {dims}")
    kind, source = OOD_SCORES.get(score), FEATURE_SOURCES.get(features)
    started = time.perf_counter()
    served, metadata, data_config = load_for_evaluation(checkpoint, local_data=local_data)
    size = int(metadata["input_size"])
    root = Path(data if data is not None else data_config.root or data_config.synthetic_dir)
    data_config = dataclasses.replace(data_config, root=str(root))
    train = resolve_split(data_config, root)["train"]
    if max_train_images is not None and len(train) > max_train_images:
        chosen = np.random.default_rng(seed).choice(len(train), max_train_images, replace=False)
        train = [train[i] for i in sorted(chosen)]
    val, val_description = records_for(root, "val", data_config)
    layer = source.locate(base_network(served).eval(), size)
    tap = FeatureTap(served.eval(), layer, source)
    val_features, val_logits, val_labels = extract(tap, val, data_config, size)
    if kind.needs_training_features:
        train_features, _, train_labels = extract(tap, train, data_config, size)
    else:
        train_features, train_labels = val_features[:0], val_labels[:0]
    scorer = kind.fit(train_features, train_labels, dims).eval()
    with torch.no_grad():
        val_scores = scorer(torch.from_numpy(val_features), torch.from_numpy(val_logits)).numpy()
    threshold = float(np.percentile(val_scores, percentile))
    record = {
        "score": score, "score_description": kind.description, "features": features, "layer": layer,
        "feature_description": source.description, "feature_dim": int(val_features.shape[1]),
        "dims": int(scorer.components.shape[0]) if isinstance(scorer, MahalanobisScore) else None,
        "threshold": threshold, "threshold_rule": f"{percentile:g}th percentile of the scores on the validation split",
        "percentile": percentile, "fitted_on": {"data": f"{root}:train", "count": len(train_features)},
        "threshold_on": {"data": val_description, "count": len(val_scores)},
        "fit_seconds": round(time.perf_counter() - started, 1),
    }
    side_files = dict(read_metadata(checkpoint).get(SIDE_FILES_KEY) or {})
    tensors = scorer.tensors()
    if tensors:
        side_files[OOD_KEY] = save_side_tensors(checkpoint, OOD_KEY, tensors)
    else:
        side_files.pop(OOD_KEY, None)
    update_checkpoint_metadata(checkpoint, {OOD_KEY: record, SIDE_FILES_KEY: side_files})
    return OodFit(record, val_scores)


def stored_ood_threshold(metadata: dict[str, Any]) -> float | None:
    """The check's threshold in a checkpoint's (or ONNX file's) metadata; ``None`` when it has none."""
    record = metadata.get(OOD_KEY)
    return float(record["threshold"]) if record else None

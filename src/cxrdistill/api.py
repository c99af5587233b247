"""The notebook API, reached as ``cxrdistill.create_model`` and so on: thin functions over the library.

Each forwards to the function the command line uses (named in its docstring), with the arguments a notebook
user has at hand: a model name rather than a config object, a preset name or file for a config.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from cxrdistill.config import ExperimentConfig, ModelConfig
from cxrdistill.deployment.predict import FilePrediction, expand_inputs, predict_files
from cxrdistill.evaluation.evaluate import EvaluationReport, evaluate_checkpoint
from cxrdistill.experiments.run import RunResult, run_experiment
from cxrdistill.models import MODELS
from cxrdistill.models import create_model as build_model
from cxrdistill.runtime.checkpoint import model_from_checkpoint


def create_model(name: str, num_classes: int = 2, *, pretrained: bool = False, image_size: int | None = None,
                 **options: Any) -> nn.Module:
    """A registered architecture with a fresh ``num_classes`` head, as ``timm.create_model``.

    ``pretrained`` loads torchvision's ImageNet weights from the local hub cache (never downloaded);
    ``options`` are further ``model.*`` settings (``dropout``, ``frontend``, ``transfer``, ...).
    """
    config = ModelConfig(name=name, init="imagenet" if pretrained else "scratch", **options)
    return build_model(config, num_classes, image_size)


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style ``pattern`` (``"resnet*"``), sorted."""
    return fnmatch.filter(MODELS.names(), pattern)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network of a checkpoint (either file of the pair), in eval mode, and its metadata."""
    model, metadata = model_from_checkpoint(path)
    return model.eval(), metadata


def train(config: ExperimentConfig, resume: bool = False, progress: bool = True) -> RunResult:
    """Train (and evaluate) one model as ``cxrdistill train`` does; see ``experiments.run.run_experiment``."""
    return run_experiment(config, resume, progress)


def distill(config: ExperimentConfig, teacher: str | Path, resume: bool = False, progress: bool = True) -> RunResult:
    """Train a student distilled from the ``teacher`` checkpoint, as ``cxrdistill distill`` (``config`` is kept)."""
    run = dataclasses.replace(config, distill=dataclasses.replace(config.distill, teacher=str(teacher)))
    return run_experiment(run, resume, progress)


def evaluate(checkpoint: str | Path, data: str | Path, split: str = "test", **options: Any) -> EvaluationReport:
    """Metrics with 95 % patient-bootstrap intervals on a labelled folder (``evaluation.evaluate_checkpoint``)."""
    return evaluate_checkpoint(checkpoint, data, split, **options)


def predict(model: str | Path, inputs: str | Path | Sequence[str | Path], threshold: float | None = None,
            **options: Any) -> list[FilePrediction]:
    """PNEUMONIA probability and label per image file; folders are searched (``deployment.predict_files``).

    ``model`` is a checkpoint or an exported ONNX file; ``threshold`` defaults to the model's stored one.
    """
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    return predict_files(model, expand_inputs(paths), threshold, **options)

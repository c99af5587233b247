"""Shared fixtures: a small synthetic Kermany-layout data set, made once per test session."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from cxrdistill.data.synth import SynthSpec, make_synthetic_dataset

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMALL_SYNTH_SPEC = SynthSpec(normal_patients=8, pneumonia_patients=10, image_size=(72, 64), seed=0)
"""Small enough to write in a fraction of a second; train/ and test/ both hold both classes."""


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Evaluating a checkpoint caches in the user's cache folder: the tests' own, never the real one."""
    cache = tmp_path_factory.mktemp("user-cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)  # subprocesses (the CLI under test) inherit it
    yield cache
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic set (``ROOT/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg``); treat it as read-only."""
    root = tmp_path_factory.mktemp("synth") / "chest_xray"
    make_synthetic_dataset(root, SMALL_SYNTH_SPEC)
    return root


@pytest.fixture
def synth_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A private copy of ``synth_root`` that a test may change (add, corrupt or delete files)."""
    return Path(shutil.copytree(synth_root, tmp_path / "chest_xray"))


def load_benchmark(name: str) -> ModuleType:
    """A script of ``benchmarks/`` imported as a module, so a test can call its ``main``."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses, pickling and spawned workers look modules up by name
    spec.loader.exec_module(module)
    return module


def tiny_config(synth_root: Path, workdir: Path, *overrides: str):
    """A CPU-sized experiment: ResNet18 at 32 px (11 M parameters; AlexNet's 57 M make every step and
    checkpoint slow), 2 epochs, single-process loading, all files under ``workdir``."""
    from cxrdistill.config import load_config

    return load_config(None, [
        f"output_dir={workdir / 'runs'}", "name=tiny", f"data.root={synth_root}",
        f"data.cache_dir={workdir / 'cache'}", "data.image_size=32", "data.batch_size=8", "data.num_workers=0",
        "model.name=resnet18", "train.epochs=2", "train.lr=0.01", "train.early_stopping_patience=null",
        "evaluation.n_bootstrap=20", *overrides,
    ])


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ResNet18 at 64 px (seeded) whose PNEUMONIA log-odds rise with every final feature map, so
    that its Grad-CAM map is never empty: enough for prediction, heat maps and the service."""
    import torch

    from cxrdistill.config import load_config
    from cxrdistill.models import create_model
    from cxrdistill.runtime.checkpoint import checkpoint_metadata, save_checkpoint

    torch.manual_seed(0)
    config = load_config(None, ["model.name=resnet18"])
    model = create_model(config.model, image_size=64)
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[-0.02], [0.02]]).expand_as(model.fc.weight))
        model.fc.bias.copy_(torch.tensor([0.0, -0.5]))
    return save_checkpoint(tmp_path_factory.mktemp("model") / "student.pt", model, checkpoint_metadata(config, 64))


@pytest.fixture(scope="session")
def small_onnx(small_checkpoint: Path) -> Path:
    """``small_checkpoint`` exported to ONNX (needs the deploy extra)."""
    from cxrdistill.deployment.export import export_onnx

    return export_onnx(small_checkpoint, small_checkpoint.with_suffix(".onnx")).path


@pytest.fixture(scope="session")
def ood_checkpoint(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ResNet18 at 64 px (seeded) whose run is ``tiny_config`` on ``synth_root``, with its
    out-of-distribution check fitted on that set's train split (threshold on its val split)."""
    import torch

    from cxrdistill.deployment.ood import fit_ood
    from cxrdistill.models import create_model
    from cxrdistill.runtime.checkpoint import checkpoint_metadata, save_checkpoint

    workdir = tmp_path_factory.mktemp("ood")
    config = tiny_config(synth_root, workdir, "data.image_size=64")
    torch.manual_seed(0)
    model = create_model(config.model, image_size=64)
    path = save_checkpoint(workdir / "student.safetensors", model, checkpoint_metadata(config, 64))
    fit_ood(path)
    return path

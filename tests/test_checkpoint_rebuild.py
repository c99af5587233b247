"""A checkpoint reloads as the very network that was trained: same logits, for every model and init.

Each case builds a model as training does, sets its BatchNorm statistics from one batch (as training
would; an untrained InceptionV3 with fresh statistics gives nearly the same logits for any input,
which would hide a wrong input transform), saves it as a checkpoint, reloads it the way evaluation,
KD, export and serving do (``model_from_checkpoint``) and compares logits on one input. Inputs are
each model's minimum size and ``init: imagenet`` is run for the paper's two models only (its code
path differs from a weights file only in where the file is found), so even VGG16 stays cheap.
"""

import os
from pathlib import Path

import pytest
import torch
from torch.optim.swa_utils import update_bn

from cxrdistill.config import ExperimentConfig, ModelConfig
from cxrdistill.models import MODELS, create_model, model_spec
from cxrdistill.models.weights import imagenet_weights_path
from cxrdistill.runtime.checkpoint import (
    CheckpointError,
    checkpoint_metadata,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)

HEAVY = {"vgg16"}
"""138 M parameters: building, saving and reloading it takes seconds, so its cases are in the full tier."""
CASES = [pytest.param(name, init, marks=[pytest.mark.slow] if name in HEAVY else [])
         for name in MODELS.names() for init in ("scratch", "weights_file")] + [
    ("alexnet", "imagenet"), ("inception_v3", "imagenet")]


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory):
    """Per architecture, a weights file written by the test (a freshly built network's state dict),
    made once and shared by the weights-file and ImageNet cases."""
    folder = tmp_path_factory.mktemp("weights")
    paths: dict[str, Path] = {}

    def weights_file(name: str) -> Path:
        if name not in paths:
            size = model_spec(name).min_input_size
            paths[name] = folder / f"{name}.pth"
            torch.save(create_model(ModelConfig(name=name), image_size=size).state_dict(), paths[name])
        return paths[name]

    return weights_file


def model_config(name: str, init: str, weights_file: Path, tmp_path: Path, monkeypatch) -> ModelConfig:
    """The config for ``init``; for ``imagenet``, a private torch hub cache holding the file under
    the name torchvision would have downloaded it as."""
    if init == "scratch":
        return ModelConfig(name=name)
    if init == "weights_file":
        return ModelConfig(name=name, init=str(weights_file))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    hub_path, _ = imagenet_weights_path(model_spec(name))
    hub_path.parent.mkdir(parents=True)
    os.link(weights_file, hub_path)
    return ModelConfig(name=name, init="imagenet")


def trained_and_reloaded(config: ModelConfig, size: int, path: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The live model with BatchNorm statistics of one batch, and the same model reloaded from a checkpoint."""
    torch.manual_seed(0)
    live = create_model(config, image_size=size)
    update_bn([torch.randn(4, 3, size, size)], live)
    experiment = ExperimentConfig(model=config)
    save_checkpoint(path, live, checkpoint_metadata(experiment, size))
    reloaded, _ = model_from_checkpoint(path)
    return live, reloaded


def logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


@pytest.mark.parametrize(("name", "init"), CASES)
def test_reloaded_model_gives_the_trained_models_logits(name, init, weights_files, tmp_path, monkeypatch):
    size = model_spec(name).min_input_size
    config = model_config(name, init, weights_files(name), tmp_path, monkeypatch)
    live, reloaded = trained_and_reloaded(config, size, tmp_path / "model.pt")
    images = torch.randn(1, 3, size, size)
    torch.testing.assert_close(logits(reloaded, images), logits(live, images))


def test_srm_frontend_model_reloads_with_its_options(tmp_path):
    config = ModelConfig(name="resnet18", frontend="srm",
                         frontend_options={"learned_residuals": 2, "quantize": False, "truncation": 3.0})
    live, reloaded = trained_and_reloaded(config, 32, tmp_path / "model.pt")
    images = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(logits(reloaded, images), logits(live, images))


def test_checkpoint_records_how_the_model_was_built(weights_files, tmp_path):
    config = ModelConfig(name="inception_v3", init=str(weights_files("inception_v3")), dropout=0.3)
    model = create_model(config, image_size=299)
    save_checkpoint(tmp_path / "model.pt", model, checkpoint_metadata(ExperimentConfig(model=config), 299))
    build = load_checkpoint(tmp_path / "model.pt")["metadata"]["model_build"]
    assert build == {"architecture": "inception_v3", "num_classes": 2, "input_size": 299, "dropout": 0.3,
                     "imagenet_input": True, "aux_head": True, "frontend": "none", "frontend_options": {}}


def test_checkpoint_without_a_build_record_is_refused(tmp_path):
    """The build record is the one way a network is rebuilt; without it loading stops with what is missing."""
    config = ModelConfig(name="resnet18")
    metadata = checkpoint_metadata(ExperimentConfig(model=config), 32)
    del metadata["model_build"]
    save_checkpoint(tmp_path / "old.safetensors", create_model(config, image_size=32), metadata)
    with pytest.raises(CheckpointError, match="records no model_build"):
        model_from_checkpoint(tmp_path / "old.safetensors")

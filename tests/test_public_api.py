"""The public API: every subpackage's ``__all__`` imports and is documented; the top-level functions work."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

import cxrdistill

PACKAGES = ["cxrdistill", "cxrdistill.config", "cxrdistill.data", "cxrdistill.models", "cxrdistill.runtime",
            "cxrdistill.evaluation", "cxrdistill.training", "cxrdistill.distillation", "cxrdistill.deployment",
            "cxrdistill.experiments", "cxrdistill.paper"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_imports_and_has_a_docstring(package: str) -> None:
    if package == "cxrdistill.deployment":
        pytest.importorskip("fastapi")  # create_app and serve need the serve extra
    module = importlib.import_module(package)
    assert module.__all__, package
    for name in module.__all__:
        value = getattr(module, name)
        if callable(value) or isinstance(value, type):
            assert (value.__doc__ or "").strip(), f"{package}.{name} has no docstring"
    assert set(module.__all__) <= set(dir(module))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'cxrdistill' has no attribute 'create_modle'"):
        cxrdistill.create_modle  # noqa: B018


def test_import_cxrdistill_is_cheap() -> None:
    """The names load on first use: importing the package imports neither torch nor the library."""
    code = "import sys, cxrdistill; print('torch' in sys.modules, 'cxrdistill.api' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_create_and_list_models_like_timm() -> None:
    assert cxrdistill.list_models() == cxrdistill.models.MODELS.names()
    assert cxrdistill.list_models("resnet*") == ["resnet18", "resnet34"]
    model = cxrdistill.create_model("alexnet", num_classes=2, dropout=0.1)
    assert model.classifier[6].out_features == 2 and model.classifier[0].p == 0.1
    assert cxrdistill.create_model("resnet18", num_classes=3).fc.out_features == 3
    with pytest.raises(KeyError, match="unknown model 'lenet'"):
        cxrdistill.create_model("lenet")


def test_load_checkpoint_gives_the_trained_network(tmp_path) -> None:
    from cxrdistill.runtime import checkpoint_metadata, save_checkpoint

    config = cxrdistill.load_config(None, ["model.name=resnet18"])
    model = cxrdistill.create_model("resnet18", num_classes=2).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, checkpoint_metadata(config, 32))
    loaded, metadata = cxrdistill.load_checkpoint(path)
    images = torch.randn(1, 3, 32, 32)
    assert not loaded.training and metadata["architecture"] == "resnet18"
    torch.testing.assert_close(loaded(images), model(images))

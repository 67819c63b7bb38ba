"""torchvision's ImageNet classifiers, fed images resized to the size they were trained at.

For users with torchvision's ImageNet weights (``--weights imagenet`` downloads them): a 32 x 32
image is upsampled to ``input_size`` (224 by default) inside the model, and the 1000-way head is
replaced by one for the data's classes (the file's head is reported unused).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from dlcv.models.registry import register_model


class Resized(nn.Module):
    """A torchvision classifier (``net``) whose input is resized to ``input_size`` x ``input_size`` first."""

    def __init__(self, net: nn.Module, input_size: int, feature_layer: str) -> None:
        super().__init__()
        self.net = net
        self.input_size = input_size
        self.feature_layer = f"net.{feature_layer}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (self.input_size, self.input_size)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.net(x)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's layout (``conv1.weight`` ...) -> this wrapper's (``net.conv1.weight`` ...)."""
        return {key if key.startswith("net.") else f"net.{key}": value for key, value in state.items()}


def _register(name: str, factory: Callable[..., nn.Module], weights, feature_layer: str, description: str) -> None:
    @register_model(name, "classify", f"torchvision {description}, input resized (ImageNet weights)", weights)
    def build(num_classes: int, input_size: int = 224) -> Resized:
        return Resized(factory(weights=None, num_classes=num_classes), input_size, feature_layer)


_register("resnet18", models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, "avgpool", "ResNet-18")
_register("resnet50", models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2, "avgpool", "ResNet-50")
_register(
    "convnext_tiny", models.convnext_tiny, models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1, "classifier.1", "ConvNeXt-T"
)
_register(
    "efficientnet_b0",
    models.efficientnet_b0,
    models.EfficientNet_B0_Weights.IMAGENET1K_V1,
    "avgpool",
    "EfficientNet-B0",
)

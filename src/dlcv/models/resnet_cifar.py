"""Residual networks made for 32 x 32 images and trained from scratch.

``resnet18_cifar``/``resnet34_cifar``: torchvision's ResNet with the CIFAR stem (one 3x3
convolution at stride 1, no max pooling), so 32 x 32 inputs keep 4 x 4 maps before pooling.
``wrn16_8``/``wrn28_10``: pre-activation wide ResNets (Zagoruyko and Komodakis, 2016), and at width
1 ``resnet20_cifar``, the 0.27M-parameter CIFAR ResNet-20 of He et al. (2016) in its pre-activation form.

All of them run channels-last on a CPU too, where oneDNN's NHWC kernels train them 1.1x (ResNet-34,
WRN-28-10) to 1.3x (ResNet-20) faster (bench/layout_bench.py, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from dlcv.models.registry import register_model


class CifarResNet(ResNet):
    """torchvision's ResNet with a 3x3, stride-1 stem and no max pooling."""

    feature_layer = "avgpool"

    def __init__(self, num_classes: int, layers: tuple[int, int, int, int] = (2, 2, 2, 2)) -> None:
        super().__init__(BasicBlock, list(layers), num_classes=num_classes, zero_init_residual=True)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class WideBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv, BN-ReLU-(dropout)-conv, plus the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(out)))))
        return out + shortcut


class WideResNet(nn.Module):
    """Pre-activation ResNet of three groups of ``blocks`` blocks with 16k, 32k and 64k channels (k the width).

    WRN-d-k has (d - 4) / 6 blocks per group.
    """

    feature_layer = "pool"

    def __init__(self, num_classes: int, blocks: int = 4, width: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        channels = [16, 16 * width, 32 * width, 64 * width]
        self.stem = _conv3x3(3, channels[0])
        layers = []
        for group, stride in enumerate((1, 2, 2)):
            for block in range(blocks):
                in_channels = channels[group] if block == 0 else channels[group + 1]
                layers.append(WideBlock(in_channels, channels[group + 1], stride if block == 0 else 1, dropout))
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(channels[-1])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(F.relu(self.bn(self.blocks(self.stem(x))))))


@register_model(
    "resnet18_cifar",
    "classify",
    "ResNet-18 with a CIFAR stem for small images, from scratch",
    channels_last_on_cpu=True,
)
def resnet18_cifar(num_classes: int, **kwargs) -> CifarResNet:
    return CifarResNet(num_classes, (2, 2, 2, 2), **kwargs)


@register_model(
    "resnet34_cifar",
    "classify",
    "ResNet-34 with a CIFAR stem for small images, from scratch",
    channels_last_on_cpu=True,
)
def resnet34_cifar(num_classes: int, **kwargs) -> CifarResNet:
    return CifarResNet(num_classes, (3, 4, 6, 3), **kwargs)


@register_model("wrn16_8", "classify", "wide ResNet WRN-16-8 for small images, from scratch", channels_last_on_cpu=True)
def wrn16_8(num_classes: int, **kwargs) -> WideResNet:
    return WideResNet(num_classes, blocks=2, width=8, **kwargs)


@register_model(
    "wrn28_10", "classify", "wide ResNet WRN-28-10 for small images, from scratch", channels_last_on_cpu=True
)
def wrn28_10(num_classes: int, **kwargs) -> WideResNet:
    return WideResNet(num_classes, blocks=4, width=10, **kwargs)


@register_model(
    "resnet20_cifar",
    "classify",
    "pre-activation ResNet-20 for small images (0.27M parameters), from scratch",
    channels_last_on_cpu=True,
)
def resnet20_cifar(num_classes: int, **kwargs) -> WideResNet:
    return WideResNet(num_classes, blocks=3, width=1, **kwargs)

"""DeepLabv3+ (Chen et al., 2018): ASPP at output stride 16 with a stride-4 decoder, on VGG16 or a ResNet.

The ASPP module is torchvision's (parallel 1x1 and atrous 3x3 convolutions at rates 6, 12, 18
plus image pooling, all with BatchNorm). The decoder follows the paper: the stride-4 encoder
feature reduced to 48 channels by a 1x1 convolution, concatenated with the upsampled ASPP output,
then two 3x3 convolutions of 256 channels and a 1x1 classifier; scores are upsampled x4 bilinearly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights, VGG16_Weights
from torchvision.models.segmentation.deeplabv3 import ASPP

from dlcv.models.encoders import EncoderDecoder, ResNetEncoder, VGG16Encoder, conv_bn_relu
from dlcv.models.registry import register_model

ATROUS_RATES = (6, 12, 18)  # the paper's rates at output stride 16


class DeepLabV3PlusDecoder(nn.Module):
    """Encoder features (finest first; the last at stride 16) -> class scores at stride 4."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_strides: Sequence[int],
        num_classes: int,
        atrous_rates: Sequence[int] = ATROUS_RATES,
        channels: int = 256,
        low_level_channels: int = 48,
    ) -> None:
        super().__init__()
        self.low_level = list(encoder_strides).index(4)
        self.aspp = ASPP(encoder_channels[-1], list(atrous_rates), channels)
        self.reduce = conv_bn_relu(encoder_channels[self.low_level], low_level_channels, kernel_size=1)
        self.fuse = nn.Sequential(
            conv_bn_relu(channels + low_level_channels, channels), conv_bn_relu(channels, channels)
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low = self.reduce(features[self.low_level])
        context = F.interpolate(self.aspp(features[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([context, low], dim=1)))


@register_model(
    "deeplabv3plus_vgg16",
    "segment",
    "DeepLabv3+ (ASPP, stride-4 decoder) on a VGG16 encoder at output stride 16",
    VGG16_Weights.IMAGENET1K_V1,
    min_batch_size=2,
    channels_last_on_cpu=True,
)
def deeplabv3plus_vgg16(num_classes: int, atrous_rates: Sequence[int] = ATROUS_RATES) -> EncoderDecoder:
    encoder = VGG16Encoder()
    return EncoderDecoder(encoder, DeepLabV3PlusDecoder(encoder.channels, encoder.strides, num_classes, atrous_rates))


def _register_resnet(depth: int, weights) -> None:
    @register_model(
        f"deeplabv3plus_resnet{depth}",
        "segment",
        f"DeepLabv3+ (ASPP, stride-4 decoder) on a ResNet-{depth} encoder dilated to output stride 16",
        weights,
        min_batch_size=2,
        channels_last_on_cpu=True,
    )
    def build(num_classes: int, atrous_rates: Sequence[int] = ATROUS_RATES) -> EncoderDecoder:
        encoder = ResNetEncoder(depth, output_stride=16)
        return EncoderDecoder(
            encoder, DeepLabV3PlusDecoder(encoder.channels, encoder.strides, num_classes, atrous_rates)
        )


for _depth, _weights in ((50, ResNet50_Weights.IMAGENET1K_V2), (101, ResNet101_Weights.IMAGENET1K_V2)):
    _register_resnet(_depth, _weights)

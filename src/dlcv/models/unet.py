"""U-Net (Ronneberger, Fischer and Brox, 2015) decoders on a VGG16 or ResNet encoder.

Each decoder block upsamples bilinearly to the next finer encoder stage, concatenates that stage
(the skip connection) and applies two 3x3 convolutions with BatchNorm. Every skip is BatchNorm'd
before the concatenation: VGG16 has no BatchNorm of its own, and its raw stage-1 and stage-2 features
(root mean square about 31 and 16 on the course's images with the HED weights) would otherwise
outweigh the normalised decoder path (about 0.6) fifty-fold and drown its semantics. On VGG16 (as in
TernausNet) a centre block of two convolutions runs on the pooled fifth stage at stride 32 and the
last block fuses the full-resolution first stage; on a ResNet decoding starts from its stride-32
last stage and the scores, made at stride 2, are upsampled bilinearly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet50_Weights, VGG16_Weights

from dlcv.models.encoders import EncoderDecoder, ResNetEncoder, VGG16Encoder, conv_bn_relu
from dlcv.models.registry import register_model

DECODER_CHANNELS = (256, 128, 64, 32, 16)


class UNetDecoder(nn.Module):
    """Encoder features (finest first) -> class scores at the finest stage's stride."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        num_classes: int,
        decoder_channels: Sequence[int] = DECODER_CHANNELS,
        pooled_centre: bool = False,
    ) -> None:
        super().__init__()
        self.pooled_centre = pooled_centre
        # With a pooled centre every stage is a skip; otherwise the deepest stage is the centre itself.
        skips = list(encoder_channels)[::-1] if pooled_centre else list(encoder_channels)[-2::-1]
        if len(decoder_channels) < len(skips):
            raise ValueError(f"decoder_channels needs {len(skips)} entries, got {len(decoder_channels)}")
        deepest = encoder_channels[-1]
        self.centre = (
            nn.Sequential(conv_bn_relu(deepest, deepest), conv_bn_relu(deepest, deepest))
            if pooled_centre
            else nn.Identity()
        )
        blocks, channels = [], deepest
        for skip, out in zip(skips, decoder_channels, strict=False):
            blocks.append(nn.Sequential(conv_bn_relu(channels + skip, out), conv_bn_relu(out, out)))
            channels = out
        self.blocks = nn.ModuleList(blocks)
        self.skip_norms = nn.ModuleList(nn.BatchNorm2d(skip) for skip in skips)
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.pooled_centre:
            x, skips = F.max_pool2d(features[-1], 2), features[::-1]
        else:
            x, skips = features[-1], features[-2::-1]
        x = self.centre(x)
        for block, norm, skip in zip(self.blocks, self.skip_norms, skips, strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, norm(skip)], dim=1))
        return self.head(x)


@register_model(
    "unet_vgg16", "segment", "U-Net decoder on a VGG16 encoder (TernausNet-style)", VGG16_Weights.IMAGENET1K_V1
)
def unet_vgg16(num_classes: int, decoder_channels: Sequence[int] = DECODER_CHANNELS) -> EncoderDecoder:
    encoder = VGG16Encoder()
    return EncoderDecoder(encoder, UNetDecoder(encoder.channels, num_classes, decoder_channels, pooled_centre=True))


@register_model("unet_resnet50", "segment", "U-Net decoder on a ResNet-50 encoder", ResNet50_Weights.IMAGENET1K_V2)
def unet_resnet50(num_classes: int, decoder_channels: Sequence[int] = DECODER_CHANNELS) -> EncoderDecoder:
    encoder = ResNetEncoder(50, output_stride=32)
    return EncoderDecoder(encoder, UNetDecoder(encoder.channels, num_classes, decoder_channels))

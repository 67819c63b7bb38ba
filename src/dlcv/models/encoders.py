"""Multi-scale encoders for the U-Net and DeepLabv3+ decoders, in torchvision's weight layouts.

An encoder returns one feature map per stage, finest first, and says each one's channels and
stride. Its own state-dict keys are torchvision's (``features.N`` for VGG16; ``conv1``, ``bn1``,
``layer1`` ... for ResNets), so the HED VGG16 file and torchvision's ImageNet weights load into it
as they are; :class:`EncoderDecoder` adds the ``encoder.`` prefix when a model loads them.

Built from torchvision rather than segmentation_models_pytorch: the GPU machine lacks smp (and its
timm/huggingface_hub stack would have to travel as wheels), and smp's VGG encoders cannot run at
output stride 16 for DeepLabv3+, while VGG16's fifth stage, read before its last pooling, already is
at stride 16 with the HED weights unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50, resnet101

from dlcv.models.fcn import vgg16_features

#: Slice ends in ``vgg16().features`` of the five stages, each read before its max-pooling.
VGG16_STAGE_ENDS = (4, 9, 16, 23, 30)
#: What the inputs of every encoder-decoder are padded to a multiple of: the deepest stride.
PAD_MULTIPLE = 32


class VGG16Encoder(nn.Module):
    """VGG16's conv stages before each pooling: 64, 128, 256, 512, 512 channels at strides 1 to 16."""

    channels = (64, 128, 256, 512, 512)
    strides = (1, 2, 4, 8, 16)

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()[: VGG16_STAGE_ENDS[-1]]  # pool5 dropped: stage 5 stays at stride 16

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs, start = [], 0
        for end in VGG16_STAGE_ENDS:
            x = self.features[start:end](x)
            outputs.append(x)
            start = end
        return outputs


class ResNetEncoder(nn.Module):
    """A torchvision ResNet's stem and four stages; ``output_stride=16`` dilates the last stage instead of striding."""

    channels = (64, 256, 512, 1024, 2048)

    def __init__(self, depth: int = 50, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride not in (16, 32):
            raise ValueError("output_stride must be 16 or 32")
        builders = {50: resnet50, 101: resnet101}
        if depth not in builders:
            raise ValueError(f"depth must be one of {sorted(builders)}")
        net = builders[depth](weights=None, replace_stride_with_dilation=[False, False, output_stride == 16])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.strides = (2, 4, 8, 16, output_stride)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [stem, c1, c2, c3, self.layer4(c3)]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Convolution (no bias: BatchNorm follows), BatchNorm, ReLU: the decoders' building block."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class EncoderDecoder(nn.Module):
    """An encoder and a decoder (features -> class scores), taking inputs of any size and returning scores of that size.

    Inputs are zero-padded (the mean colour, after normalisation) to a multiple of 32 so that every
    stride divides evenly; scores are upsampled bilinearly to the padded size and cropped back.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % PAD_MULTIPLE, 0, -height % PAD_MULTIPLE))
        scores = self.decoder(self.encoder(x))
        if scores.shape[-2:] != x.shape[-2:]:
            scores = F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return scores[..., :height, :width]

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision layout (``features.N``, ``layer1...``) -> ``encoder.``; other keys pass unchanged."""
        encoder_keys = set(self.encoder.state_dict())
        return {(f"encoder.{key}" if key in encoder_keys else key): value for key, value in state.items()}

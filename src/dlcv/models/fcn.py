"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer and Darrell, 2015) on a VGG16 backbone.

The backbone is torchvision's ``vgg16().features`` module layout, so torchvision's weights and
the HED VGG16 file load into it unchanged; fc6/fc7 are convolutions (ImageNet's fully connected
weights reshape into them); upsampling is by transposed convolutions initialised bilinear. Inputs
of any size are padded to a multiple of 32 and the output cropped back, so it is exactly the
input's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VGG16_Weights
from torchvision.models.vgg import cfgs, make_layers

from dlcv.models.registry import register_model

# Indices in vgg16().features after which pool3, pool4 and pool5 have run.
POOL3_END, POOL4_END = 17, 24


def vgg16_features() -> nn.Sequential:
    """VGG16's convolutional layers in torchvision's layout (``features.N``), He-initialised."""
    features = make_layers(cfgs["D"], batch_norm=False)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return features


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights making a transposed convolution upsample each channel bilinearly."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return weight


def upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Transposed convolution that maps n pixels to exactly ``factor * n``, initialised bilinear."""
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return layer


def zero_scorer(in_channels: int, num_classes: int) -> nn.Conv2d:
    """1x1 scoring layer for a skip connection, zero-initialised so the net starts as its coarser parent."""
    layer = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class FCN(nn.Module):
    """VGG16 FCN with output stride 32, 16 or 8."""

    def __init__(self, num_classes: int, stride: int = 8, fc_channels: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        if stride not in (32, 16, 8):
            raise ValueError("stride must be 32, 16 or 8")
        self.stride = stride
        self.features = vgg16_features()
        self.fc6 = nn.Conv2d(512, fc_channels, 7, padding=3)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.drop = nn.Dropout2d(dropout)
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        for layer in (self.fc6, self.fc7):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        if stride <= 16:
            self.score_pool4 = zero_scorer(512, num_classes)
            self.up_pool4 = upsampler(num_classes, 2)
        if stride == 8:
            self.score_pool3 = zero_scorer(256, num_classes)
            self.up_pool3 = upsampler(num_classes, 2)
        self.up_final = upsampler(num_classes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % 32, 0, -height % 32))
        pool3 = self.features[:POOL3_END](x)
        pool4 = self.features[POOL3_END:POOL4_END](pool3)
        pool5 = self.features[POOL4_END:](pool4)
        score = self.drop(F.relu(self.fc6(pool5), inplace=True))
        score = self.score_fr(self.drop(F.relu(self.fc7(score), inplace=True)))
        if self.stride <= 16:
            score = self.up_pool4(score) + self.score_pool4(pool4)
        if self.stride == 8:
            score = self.up_pool3(score) + self.score_pool3(pool3)
        return self.up_final(score)[..., :height, :width]

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision VGG16 layout -> FCN: fc6/fc7 of the classifier become convolutions."""
        adapted = dict(state)
        fc_channels = self.fc6.out_channels
        for source, target, shape in (
            ("classifier.0", "fc6", (fc_channels, 512, 7, 7)),
            ("classifier.3", "fc7", (fc_channels, fc_channels, 1, 1)),
        ):
            weight = state.get(f"{source}.weight")
            if weight is not None and weight.numel() == torch.Size(shape).numel() and weight.shape[0] == fc_channels:
                adapted[f"{target}.weight"] = adapted.pop(f"{source}.weight").view(shape)
                if f"{source}.bias" in adapted:
                    adapted[f"{target}.bias"] = adapted.pop(f"{source}.bias")
        return adapted


def _register(stride: int) -> None:
    @register_model(f"fcn{stride}s", "segment", f"VGG16 FCN-{stride}s (Long et al. 2015)", VGG16_Weights.IMAGENET1K_V1)
    def build(num_classes: int, **kwargs) -> FCN:
        return FCN(num_classes, stride=stride, **kwargs)


for _stride in (32, 16, 8):
    _register(_stride)

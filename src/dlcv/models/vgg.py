"""VGG16-BN classifier of the report: torchvision's VGG16-BN, then 1000 -> 256 -> classes.

torchvision's layout is kept (``features.N``, ``classifier.N``), so its ImageNet VGG16-BN weights
load as they are; plain VGG16 convolution weights (the HED file, torchvision ``vgg16``) load into
VGG16-BN's 13 convolutions in order, the batch-norm layers keeping their initialisation.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import VGG, VGG16_BN_Weights
from torchvision.models.vgg import cfgs, make_layers

from dlcv.models.registry import register_model


class VGG16BNClassifier(VGG):
    """VGG16-BN (features, 7x7 adaptive pool, classifier to 1000), then Linear(1000, 256), ReLU,
    Dropout(0.5), Linear(256, classes)."""

    #: The 256-unit layer after its ReLU: the penultimate features (the report's t-SNE).
    feature_layer = "head.1"

    def __init__(self, num_classes: int, hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__(make_layers(cfgs["D"], batch_norm=True), num_classes=1000, dropout=dropout)
        self.head = nn.Sequential(
            nn.Linear(1000, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(super().forward(x))

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Plain VGG16 ``features.N`` convolutions -> this model's convolutions, in order.

        A state whose convolutions already sit where this model's are (torchvision's VGG16-BN) is
        returned as it is; so is one with another number of convolutions (load_state reports it).
        """
        source = sorted(
            {int(key.split(".")[1]) for key, value in state.items() if key.startswith("features.") and value.ndim == 4}
        )
        target = [index for index, module in enumerate(self.features) if isinstance(module, nn.Conv2d)]
        if source == target or len(source) != len(target):
            return state
        moved = {
            f"features.{s}.{kind}": f"features.{t}.{kind}"
            for s, t in zip(source, target, strict=True)
            for kind in ("weight", "bias")
        }
        return {moved.get(key, key): value for key, value in state.items()}


@register_model(
    "vgg16_bn",
    "classify",
    "VGG16-BN, then 1000 -> 256 -> classes (the report's model)",
    VGG16_BN_Weights.IMAGENET1K_V1,
    channels_last_on_cpu=True,
)
def vgg16_bn(num_classes: int, **kwargs) -> VGG16BNClassifier:
    return VGG16BNClassifier(num_classes, **kwargs)

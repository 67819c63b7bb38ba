"""Augmentation of whole uint8 batches on the training device: crop, flip, a policy, mixup/cutmix.

Small images make per-image CPU transforms the bottleneck of a GPU; here every operation works on
the batch tensor where it already lies, so an epoch costs a few tensor ops per batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

#: ``--policy`` names: torchvision's automatic augmentation policies (they take uint8 batches on any device).
POLICIES = {"none": None, "trivialaugment": v2.TrivialAugmentWide, "randaugment": v2.RandAugment}
#: A policy draws one operation per call; calling it on this many slices of a batch varies it within the batch.
POLICY_GROUPS = 32


def random_crop_flip(images: torch.Tensor, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Each image of an N x C x H x W batch cropped back to H x W from its zero-padded self at a random
    offset (the CIFAR recipe), then mirrored left-right with probability 1/2."""
    count, channels, height, width = images.shape
    device = images.device
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (count,), device=device)
        dx = torch.randint(0, 2 * padding + 1, (count,), device=device)
        rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]
        columns = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]
        batch = torch.arange(count, device=device)[:, None, None, None]
        images = padded[batch, torch.arange(channels, device=device)[None, :, None, None], rows, columns]
    if flip:
        mirrored = torch.rand(count, device=device) < 0.5
        images = torch.where(mirrored[:, None, None, None], images.flip(-1), images)
    return images


def policy_transform(name: str) -> v2.Transform | None:
    if name not in POLICIES:
        raise ValueError(f"unknown augmentation policy {name!r}; choose {', '.join(POLICIES)}")
    policy = POLICIES[name]
    return None if policy is None else policy()


def mixing_transform(num_classes: int, mixup: float, cutmix: float) -> v2.Transform | None:
    """MixUp and/or CutMix with Beta(alpha, alpha) mixing (alpha 0 turns one off); one of the two per batch."""
    choices = []
    if mixup > 0:
        choices.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        choices.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)


class BatchAugment(nn.Module):
    """Training augmentation of a uint8 batch and its labels, on the batch's device.

    Returns images (uint8, or float in 0..255 once mixed) and targets (class numbers, or class
    probabilities N x classes once mixed), both ready for ``Task.forward`` and cross-entropy.
    """

    def __init__(
        self,
        num_classes: int,
        padding: int = 4,
        flip: bool = True,
        policy: str = "none",
        mixup: float = 0.0,
        cutmix: float = 0.0,
    ) -> None:
        super().__init__()
        self.padding, self.flip = padding, flip
        self.policy = policy_transform(policy)
        self.mix = mixing_transform(num_classes, mixup, cutmix)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = random_crop_flip(images, self.padding, self.flip)
        if self.policy is not None:
            size = -(-len(images) // POLICY_GROUPS)
            images = torch.cat([self.policy(group) for group in images.split(size)])
        if self.mix is not None:
            images, labels = self.mix(images.float(), labels)
        return images, labels

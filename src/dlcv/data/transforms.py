"""Transforms: joint image/mask augmentation of whole batches and model input scaling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Every pretrained backbone dlcv loads (ImageNet, HED VGG16) expects this normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float, scaled to [0, 1] and normalised with the ImageNet statistics."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


class LandCoverAugment:
    """Random crop window, flips and 90-degree turns for a whole batch of image/mask pairs, each pair with
    its own draw: one affine sampling grid per pair, one ``grid_sample`` for the images (bilinear) and
    one for the masks (nearest, so no blended labels), wherever the batch lies.

    The windows: with ``scale_range``, a zoom factor drawn log-uniformly from it, cutting ``size / factor``
    pixels square (raised to the smallest factor that fits: crops never need padding, which masks would
    have to label with a class they do not show); else ``v2.RandomResizedCrop``'s ranges, at least
    ``min_scale`` of the area with aspect ratio 3:4 to 4:3, the area lowered where a window of that
    aspect would not fit (torchvision draws again instead). Per-pair torchvision
    transforms cost a dozen small kernels and their Python per pair: on a GPU that, not the arithmetic,
    would bound the input pipeline. Parameters come from torch's CPU generator (reseeded every epoch).
    """

    def __init__(self, size: int, min_scale: float = 0.25, scale_range: tuple[float, float] | None = None) -> None:
        self.size, self.min_scale, self.scale_range = size, min_scale, scale_range

    def windows(self, count: int, height: int, width: int) -> torch.Tensor:
        """``count`` x 4 crop windows (top, left, window height, window width) in pixels, inside the image."""
        if self.scale_range is not None:
            fits = self.size / min(height, width)
            low, high = (math.log(max(bound, fits)) for bound in self.scale_range)
            factor = torch.exp(low + (high - low) * torch.rand(count, dtype=torch.float64))
            window_h = window_w = torch.clamp(self.size / factor, max=min(height, width))
        else:
            area = height * width * (self.min_scale + (1 - self.min_scale) * torch.rand(count, dtype=torch.float64))
            ratio = torch.exp(math.log(3 / 4) + math.log(16 / 9) * torch.rand(count, dtype=torch.float64))
            area = torch.minimum(area, torch.minimum(width**2 / ratio, height**2 * ratio))  # the largest that fits
            window_w, window_h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        top = (height - window_h) * torch.rand(count, dtype=torch.float64)
        left = (width - window_w) * torch.rand(count, dtype=torch.float64)
        return torch.stack([top, left, window_h, window_w], dim=1)

    def grids(self, count: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Sampling grids (count x size x size x 2) of random windows, each flipped and turned at random."""
        top, left, window_h, window_w = self.windows(count, height, width).unbind(1)
        turns = torch.randint(4, (count,))
        mirror = torch.where(torch.rand(count, 2) < 0.5, -1.0, 1.0).to(torch.float64)
        cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)[turns]
        sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)[turns]
        # Output coordinates (x, y), turned and mirrored, then scaled into the window (normalised, -1 to 1).
        rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        linear = rotation * mirror[:, None, :] * torch.stack([window_w / width, window_h / height], -1)[:, :, None]
        centre = torch.stack([(2 * left + window_w) / width - 1, (2 * top + window_h) / height - 1], -1)
        theta = torch.cat([linear, centre[:, :, None]], dim=2).float()
        if device.type == "cuda":  # from pinned memory the copy queues behind the GPU's work, not waiting for it
            theta = theta.pin_memory()
        return F.affine_grid(theta.to(device, non_blocking=True), [count, 1, self.size, self.size], align_corners=False)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images N x 3 x H x W and masks N x H x W -> the same at ``size`` x ``size``; int64 masks."""
        count, _, height, width = images.shape
        grid = self.grids(count, height, width, images.device)
        out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        labels = F.grid_sample(masks[:, None].float(), grid, mode="nearest", align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8), labels[:, 0].long()

"""Transforms: joint image/mask augmentation (torchvision v2 + tv_tensors) and model input scaling."""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

#: Every pretrained backbone dlcv loads (ImageNet, HED VGG16) expects this normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W -> float, scaled to [0, 1] and normalised with the ImageNet statistics."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


class RandomRot90(v2.Transform):
    """Rotate every input by the same random multiple of 90 degrees: aerial images have no "up"."""

    def make_params(self, flat_inputs: list) -> dict:
        return {"turns": int(torch.randint(4, ()).item())}

    def transform(self, inpt, params: dict):
        if params["turns"] == 0:
            return inpt
        return tv_tensors.wrap(torch.rot90(inpt, params["turns"], dims=(-2, -1)), like=inpt)


class JointTransform:
    """Apply a v2 transform to an image and its mask with the same random parameters."""

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


def landcover_train_transform(crop_size: int, min_scale: float = 0.25) -> JointTransform:
    """Random scale and crop, flips and 90-degree turns, applied jointly (masks use nearest)."""
    return JointTransform(
        v2.Compose(
            [
                v2.RandomResizedCrop(crop_size, scale=(min_scale, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                RandomRot90(),
            ]
        )
    )

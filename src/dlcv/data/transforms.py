"""Transforms: joint image/mask augmentation (torchvision v2 + tv_tensors) and model input scaling."""

from __future__ import annotations

import math

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
    """Apply a v2 transform to an image and its mask with the same random parameters.

    Works on tensors wherever they lie: training calls :meth:`each` on batches already on the GPU,
    so that no per-image work waits in CPU loader workers.
    """

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

    def each(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every pair of a batch (N x 3 x H x W, N x H x W) with its own random parameters; int64 masks."""
        pairs = [self(image, mask) for image, mask in zip(images, masks, strict=True)]
        return torch.stack([image for image, _ in pairs]), torch.stack([mask for _, mask in pairs]).long()


class RandomScaledCrop(v2.Transform):
    """Zoom by a factor drawn log-uniformly from ``scale_range``, then crop ``size`` pixels square inside the image.

    The region cut is ``size / factor`` pixels square, resized to ``size``. Where the image is too
    small for a factor (the region would overflow it), the factor is raised to the smallest that fits:
    crops never need padding, which masks would have to label with a class they do not show.
    """

    def __init__(self, size: int, scale_range: tuple[float, float]) -> None:
        super().__init__()
        self.size = size
        self.low, self.high = scale_range

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        fits = self.size / min(height, width)
        low, high = math.log(max(self.low, fits)), math.log(max(self.high, fits))
        factor = math.exp(low + (high - low) * float(torch.rand(())))
        side = min(round(self.size / factor), height, width)
        top = int(torch.randint(height - side + 1, ()))
        left = int(torch.randint(width - side + 1, ()))
        return {"top": top, "left": left, "side": side}

    def transform(self, inpt, params: dict):
        side = params["side"]
        return v2.functional.resized_crop(
            inpt, params["top"], params["left"], side, side, size=[self.size, self.size], antialias=True
        )


def landcover_train_transform(
    crop_size: int, min_scale: float = 0.25, scale_range: tuple[float, float] | None = None
) -> JointTransform:
    """Random scale and crop, flips and 90-degree turns, applied jointly (masks use nearest).

    The crop is ``RandomScaledCrop`` when ``scale_range`` is given, else a random crop of at least
    ``min_scale`` of the area with aspect ratio 3:4 to 4:3 (``v2.RandomResizedCrop``).
    """
    if scale_range is not None:
        crop = RandomScaledCrop(crop_size, scale_range)
    else:
        crop = v2.RandomResizedCrop(crop_size, scale=(min_scale, 1.0), ratio=(3 / 4, 4 / 3), antialias=True)
    return JointTransform(
        v2.Compose(
            [
                crop,
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                RandomRot90(),
            ]
        )
    )

"""Land-cover folders (``NNNN_sat.jpg`` + ``NNNN_mask.png``): pairing, checking, decoding, plotting.

A folder is decoded once into memory as uint8 tensors (2,000 pairs at 512 px are 2 GB), which both
checks every pair before training starts and keeps file reading out of the training loop.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dlcv.data.images import IMAGE_SUFFIXES, read_rgb, resize_square
from dlcv.data.palette import CLASS_NAMES, count_off_palette, decode_mask, encode_mask
from dlcv.errors import UserError, counted

IMAGE_TAG, MASK_TAG = "_sat", "_mask"


@dataclass(frozen=True)
class Pair:
    id: str
    image: Path
    mask: Path


def find_pairs(folder: str | Path) -> list[Pair]:
    """Every ``ID_sat.*`` image with its ``ID_mask.png``, sorted by id; an error for any loose file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    images, masks = {}, {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        for tag, found in ((IMAGE_TAG, images), (MASK_TAG, masks)):
            if path.stem.endswith(tag):
                key = path.stem[: -len(tag)]
                if (other := found.setdefault(key, path)) != path:
                    raise UserError(f"{path}: a second {tag[1:]} file of {key}, beside {other.name}")
    if not images and not masks:
        raise UserError(f"{folder}: no image/mask pairs (ID_sat.jpg with ID_mask.png) in this folder")
    for found, counterpart, missing in ((images, masks, "mask"), (masks, images, "image")):
        orphans = sorted(found.keys() - counterpart.keys())
        if orphans:
            more = f" (and {counted(len(orphans) - 1, 'more file')} like it)" if len(orphans) > 1 else ""
            raise UserError(f"{found[orphans[0]]}: has no {missing}{more}")
    return [Pair(key, images[key], masks[key]) for key in sorted(images)]


@dataclass
class DecodedPair:
    image: np.ndarray  # 3 x H x W uint8 (the layout of torch's image tensors)
    mask: np.ndarray  # H x W uint8 class indices
    off_palette: int


def decode_pair(pair: Pair, image_size: int | None = None, resize_mask: bool = True) -> DecodedPair:
    """Decode one pair, checking that the mask matches its image, optionally resized to a square."""
    image, mask_rgb = read_rgb(pair.image), read_rgb(pair.mask)
    if image.shape[:2] != mask_rgb.shape[:2]:
        raise UserError(
            f"{pair.mask}: mask is {mask_rgb.shape[1]}x{mask_rgb.shape[0]} but its image is "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    mask = decode_mask(mask_rgb)
    image = resize_square(image, image_size)
    if resize_mask:
        mask = resize_square(mask, image_size, nearest=True)
    return DecodedPair(np.ascontiguousarray(image.transpose(2, 0, 1)), mask, count_off_palette(mask_rgb))


class LandCoverDataset(torch.utils.data.Dataset):
    """A land-cover folder decoded into memory; items are ``(image uint8 3xHxW, mask int64 HxW)``.

    ``image_size`` resizes images (and, with ``resize_masks``, masks) to a square once, at decode
    time; validation keeps masks at full size so that it scores at the graders' resolution. Pairs of
    one size are held as two tensors (N x 3 x H x W images, N x H x W masks) that training moves to
    its device whole; pairs of mixed sizes as lists.
    """

    def __init__(
        self,
        folder: str | Path,
        image_size: int | None = None,
        resize_masks: bool = True,
        limit: int | None = None,
        workers: int = 2,
    ) -> None:
        self.folder = Path(folder)
        self.pairs = find_pairs(self.folder)[:limit]
        decoded = _decode_all(self.pairs, image_size, resize_masks, workers)
        self.images = _stack_if_uniform([d.image for d in decoded])
        self.masks = _stack_if_uniform([d.mask for d in decoded])
        self.off_palette_masks = [p.mask for p, d in zip(self.pairs, decoded, strict=True) if d.off_palette]
        self.off_palette_pixels = sum(d.off_palette for d in decoded)

    @property
    def ids(self) -> list[str]:
        return [pair.id for pair in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.masks[index].long()

    def uniform_size(self) -> bool:
        return isinstance(self.images, torch.Tensor) and isinstance(self.masks, torch.Tensor)

    def odd_size(self) -> Path | None:
        """The first image (or mask) whose size differs from the first pair's; None when all agree."""
        for pair, image, mask in zip(self.pairs, self.images, self.masks, strict=True):
            if image.shape != self.images[0].shape:
                return pair.image
            if mask.shape != self.masks[0].shape:
                return pair.mask
        return None

    def plot(self, index: int, prediction: np.ndarray | None = None, title: str | None = None):
        """Image, ground truth and optionally a prediction side by side, with a class legend."""
        import matplotlib.pyplot as plt

        from dlcv.viz.masks import mask_legend_handles

        panels = [
            ("image", self.images[index].permute(1, 2, 0).numpy()),
            ("ground truth", encode_mask(self.masks[index].numpy())),
        ]
        if prediction is not None:
            panels.append(("prediction", encode_mask(prediction)))
        figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.4), squeeze=False)
        for axis, (name, picture) in zip(axes[0], panels, strict=True):
            axis.imshow(picture)
            axis.set_title(name)
            axis.axis("off")
        figure.legend(handles=mask_legend_handles(), loc="lower center", ncol=len(CLASS_NAMES), frameon=False)
        figure.suptitle(title or self.pairs[index].id)
        return figure


def _stack_if_uniform(arrays: list[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
    """One tensor when every array has the same shape (one copy), else a tensor per array."""
    if len({array.shape for array in arrays}) == 1:
        return torch.from_numpy(np.stack(arrays))
    return [torch.from_numpy(array) for array in arrays]


def _decode_star(args: tuple[Pair, int | None, bool]) -> DecodedPair:
    return decode_pair(*args)


def _decode_all(pairs: Sequence[Pair], image_size: int | None, resize_masks: bool, workers: int) -> list[DecodedPair]:
    jobs = [(pair, image_size, resize_masks) for pair in pairs]
    if workers <= 1 or len(jobs) < 16:
        return [_decode_star(job) for job in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_decode_star, jobs, chunksize=16)

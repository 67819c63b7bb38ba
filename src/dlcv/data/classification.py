"""Image-classification folders (``<label>_<index>.png``) decoded once into one uint8 tensor.

The course set (25,000 RGB images of 32 x 32) is 77 MB decoded: it is read once, checked whole
before training starts, and then lives on the training device, so training never reads a file.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dlcv.data.images import list_images, read_rgb, resize_square
from dlcv.data.labels import match_names, parse_label, read_label_csv
from dlcv.errors import UserError

#: Folder names tried under ``--data``, in order: the course layout, then a generic one.
SPLIT_LAYOUTS = (("train_50", "val_50"), ("train", "val"))
VAL_CSV = "val_gt.csv"


def classification_dirs(data: str | Path) -> tuple[Path, Path, Path | None]:
    """(train folder, validation folder, validation label CSV or None) of a data folder.

    ``train_50/`` + ``val_50/`` (the course layout) are looked for first, then ``train/`` + ``val/``;
    a ``val_gt.csv`` beside them, when present, gives the validation labels.
    """
    root = Path(data)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    for train_name, val_name in SPLIT_LAYOUTS:
        train, val = root / train_name, root / val_name
        if train.is_dir() and val.is_dir():
            csv = root / VAL_CSV
            return train, val, csv if csv.is_file() else None
    raise UserError(f"{root}: the data folder must hold train_50/ and val_50/ (or train/ and val/)")


def _decode(job: tuple[Path, int | None]) -> np.ndarray:
    path, size = job
    return resize_square(read_rgb(path), size)


def decode_images(paths: Sequence[Path], image_size: int | None = None, workers: int = 2) -> torch.Tensor:
    """Decode ``paths`` into one uint8 N x 3 x H x W tensor, in a pool of ``workers`` processes.

    All images must share one size unless ``image_size`` resizes them to a square.
    """
    jobs = [(path, image_size) for path in paths]
    if workers <= 1 or len(jobs) < 256:
        decoded = [_decode(job) for job in jobs]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            decoded = pool.map(_decode, jobs, chunksize=256)
    first = decoded[0].shape
    for path, image in zip(paths, decoded, strict=True):
        if image.shape != first:
            raise UserError(
                f"{path}: is {image.shape[1]}x{image.shape[0]} but {paths[0].name} is {first[1]}x{first[0]}; "
                "images must share one size (train with --image-size S to resize them all to S x S)"
            )
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()


def spread(count: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``count`` items (all of them without a limit).

    Files sorted by name are grouped by class, so the first N would be one or two classes; evenly
    spread ones keep every class.
    """
    if limit is None or limit >= count:
        return list(range(count))
    return sorted({int(i) for i in np.linspace(0, count - 1, max(1, limit)).round()})


class ClassificationDataset:
    """A folder of labelled images in memory: ``images`` (uint8 N x 3 x H x W), ``labels`` (int64 N), ``names``.

    Labels come from the file names, or from ``label_csv`` (``filename,label`` or
    ``image_id,label``), which must name exactly the folder's images.
    """

    def __init__(
        self,
        folder: str | Path,
        label_csv: str | Path | None = None,
        image_size: int | None = None,
        limit: int | None = None,
        workers: int = 2,
    ) -> None:
        self.folder = Path(folder)
        paths = list_images(self.folder)
        if label_csv is not None:
            table = read_label_csv(label_csv)
            match_names(table, [p.name for p in paths], label_csv, self.folder)
            labels = [table[p.name] for p in paths]
        else:
            labels = [parse_label(p) for p in paths]
        keep = spread(len(paths), limit)
        self.paths = [paths[i] for i in keep]
        self.labels = torch.tensor([labels[i] for i in keep], dtype=torch.int64)
        self.images = decode_images(self.paths, image_size, workers)

    @property
    def names(self) -> list[str]:
        return [path.name for path in self.paths]

    @property
    def num_classes(self) -> int:
        """Classes implied by the labels: the largest label plus one."""
        return int(self.labels.max()) + 1

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def plot(self, indices: int | Sequence[int], predictions: Sequence[int] | None = None, columns: int = 8):
        """The images at ``indices`` in a grid, titled by label (and prediction: red where wrong)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        indices = [indices] if isinstance(indices, int) else list(indices)
        columns = min(columns, len(indices))
        rows = -(-len(indices) // columns)
        figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
        for axis in axes.flat:
            axis.axis("off")
        for n, (axis, index) in enumerate(zip(axes.flat, indices, strict=False)):
            axis.imshow(self.images[index].permute(1, 2, 0).numpy(), interpolation="nearest")
            title, colour = f"label {int(self.labels[index])}", "black"
            if predictions is not None:
                title += f"\npredicted {int(predictions[n])}"
                colour = "black" if int(predictions[n]) == int(self.labels[index]) else "red"
            axis.set_title(title, fontsize=8, color=colour)
        figure.tight_layout()
        return figure

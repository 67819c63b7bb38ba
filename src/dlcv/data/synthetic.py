"""Generated data sets, so that the demo and the tests run anywhere without the course data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dlcv.data.palette import NUM_CLASSES, encode_mask

#: A plausible satellite colour for each land-cover class (unknown is black, as in the real data).
_LANDCOVER_COLOURS = np.array(
    [[140, 140, 150], [190, 180, 90], [160, 120, 90], [40, 90, 40], [40, 60, 140], [215, 200, 170], [0, 0, 0]],
    dtype=np.float32,
)


def landcover_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One image and its class map: Voronoi regions of random classes, textured by class."""
    regions = int(rng.integers(3, 8))
    seeds = rng.uniform(0, size, size=(regions, 2))
    classes = rng.integers(0, NUM_CLASSES, size=regions)
    classes[:2] = rng.choice(NUM_CLASSES - 1, size=2, replace=False)  # at least two real classes
    yy, xx = np.mgrid[0:size, 0:size]
    nearest = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
    class_map = classes[nearest].astype(np.uint8)
    stripes = 12 * np.sin((xx + yy) / 2.0)[..., None] * (class_map == 1)[..., None]
    image = _LANDCOVER_COLOURS[class_map] + stripes + rng.normal(0, 12, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), class_map


def make_landcover_set(root: str | Path, train: int = 48, validation: int = 16, size: int = 64, seed: int = 0) -> Path:
    """Write ``root/train`` and ``root/validation`` in the course layout (NNNN_sat.jpg, NNNN_mask.png)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("validation", validation)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, class_map = landcover_sample(rng, size)
            Image.fromarray(image).save(folder / f"{index:04d}_sat.jpg", quality=95)
            Image.fromarray(encode_mask(class_map)).save(folder / f"{index:04d}_mask.png")
    return root

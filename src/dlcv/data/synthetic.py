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


#: Ten well-separated colours and five shapes: 50 classes, each a (shape, colour) pair.
_CLASS_COLOURS = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [250, 190, 212],
        [128, 128, 0],
    ],
    dtype=np.float32,
)
_SHAPES = ("disc", "square", "horizontal bars", "vertical bars", "ring")
MAX_GENERATED_CLASSES = len(_CLASS_COLOURS) * len(_SHAPES)


def classification_sample(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """One image of class ``label``: shape ``label // 10`` in colour ``label % 10``, jittered, on noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = rng.uniform(0.35 * size, 0.65 * size, size=2)
    radius = rng.uniform(0.22, 0.34) * size
    dy, dx = yy - cy, xx - cx
    shape = _SHAPES[label // len(_CLASS_COLOURS)]
    inside = {
        "disc": dy**2 + dx**2 <= radius**2,
        "square": (np.abs(dy) <= radius * 0.85) & (np.abs(dx) <= radius * 0.85),
        "horizontal bars": (np.abs(dy) <= radius) & (np.abs(dx) <= radius) & ((yy // max(2, size // 8)) % 2 == 0),
        "vertical bars": (np.abs(dy) <= radius) & (np.abs(dx) <= radius) & ((xx // max(2, size // 8)) % 2 == 0),
        "ring": np.abs(np.sqrt(dy**2 + dx**2) - radius * 0.8) <= radius * 0.25,
    }[shape]
    background = rng.uniform(20, 90, size=3).astype(np.float32)
    colour = _CLASS_COLOURS[label % len(_CLASS_COLOURS)] * rng.uniform(0.85, 1.1)
    image = np.where(inside[..., None], colour, background) + rng.normal(0, 10, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_classification_set(
    root: str | Path, classes: int = 10, per_class: int = 20, size: int = 32, seed: int = 0, val_per_class: int = 5
) -> Path:
    """Write ``root/train_50``, ``root/val_50`` (``<label>_<index>.png``) and ``root/val_gt.csv``: the course layout."""
    if not 1 <= classes <= MAX_GENERATED_CLASSES:
        raise ValueError(f"classes must lie in 1..{MAX_GENERATED_CLASSES}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = ["filename,label"]
    for split, count in (("train_50", per_class), ("val_50", val_per_class)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for label in range(classes):
            for index in range(count):
                name = f"{label}_{index}.png"
                Image.fromarray(classification_sample(rng, label, size)).save(folder / name)
                if split == "val_50":
                    rows.append(f"{name},{label}")
    (root / "val_gt.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root

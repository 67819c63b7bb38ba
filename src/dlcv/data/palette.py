"""The land-cover colour codec: RGB masks <-> class indices, by the graders' rule.

The graders threshold each channel at 128 and read the three bits as a code 4R + 2G + B. Every
one of the 8 codes maps to a class, so any RGB colour decodes; colours that are not exactly one of
the palette's are "off-palette" and counted so the user can be warned.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("urban", "agriculture", "rangeland", "forest", "water", "barren", "unknown")
NUM_CLASSES = len(CLASS_NAMES)
UNKNOWN = 6
#: The classes whose IoU the graders average (all but unknown).
SCORED_CLASSES = tuple(range(UNKNOWN))

#: RGB colour of each class, indexed by class.
PALETTE = np.array(
    [[0, 255, 255], [255, 255, 0], [255, 0, 255], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]],
    dtype=np.uint8,
)

#: Class of each 3-bit code 4R + 2G + B; code 4 (red) is unknown, as the graders decide.
CODE_TO_CLASS = np.array([6, 4, 3, 0, 6, 2, 1, 5], dtype=np.uint8)


def _codes(rgb: np.ndarray) -> np.ndarray:
    bits = rgb >= 128
    return (bits[..., 0].astype(np.uint8) << 2) | (bits[..., 1].astype(np.uint8) << 1) | bits[..., 2]


def decode_mask(rgb: np.ndarray) -> np.ndarray:
    """Turn an H x W x 3 uint8 RGB mask into an H x W uint8 array of class indices."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB mask, got shape {rgb.shape}")
    return CODE_TO_CLASS[_codes(rgb)]


def encode_mask(classes: np.ndarray) -> np.ndarray:
    """Turn an H x W array of class indices into an H x W x 3 uint8 RGB mask in palette colours."""
    classes = np.asarray(classes)
    if classes.size and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
        raise ValueError(f"class indices must lie in 0..{NUM_CLASSES - 1}")
    return PALETTE[classes]


def count_off_palette(rgb: np.ndarray) -> int:
    """Number of pixels whose colour is not exactly a palette colour."""
    exact = PALETTE[decode_mask(rgb)]
    return int(np.count_nonzero(np.any(exact != rgb, axis=-1)))

"""The land-cover colour codec: RGB masks <-> class indices, by the graders' rule.

The graders threshold each channel at 128 and read the three bits as a code 4R + 2G + B. Every
one of the 8 codes maps to a class, so any RGB colour decodes; colours that are not exactly one of
the palette's are "off-palette" and counted so the user can be warned.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

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


#: Pillow lookup table, R then G then B: a channel's bit of the code (4, 2 or 1 where value >= 128),
#: plus 8 where the value is neither 0 nor 255 (so the pixel cannot be a palette colour).
_CHANNEL_LUT = [
    (bit if value >= 128 else 0) + (0 if value in (0, 255) else 8) for bit in (4, 2, 1) for value in range(256)
]
#: Whether an all-0/255 colour with a given code is its class's palette colour (red, code 4, is not).
_CODE_ON_PALETTE = np.array(
    [
        np.array_equal(PALETTE[CODE_TO_CLASS[code]], [255 * (code >> shift & 1) for shift in (2, 1, 0)])
        for code in range(8)
    ]
)
#: Colour keys (see colour_key_image) run from 0 to NUM_KEYS - 1: two of them pack into one byte.
NUM_KEYS = 16
#: Class of each colour key, and whether that key is off-palette.
KEY_TO_CLASS = np.tile(CODE_TO_CLASS, 2)
KEY_OFF_PALETTE = np.concatenate([~_CODE_ON_PALETTE, np.ones(8, dtype=bool)])
#: Per scale, the channels' sum (the code, plus 8 per channel neither 0 nor 255) -> scale x key.
_SUM_TO_KEY = {
    scale: [scale * (total & 7 | (8 if total >= 8 else 0)) for total in range(256)] for scale in (1, NUM_KEYS)
}


def colour_key_image(rgb: Image.Image, scale: int = 1) -> Image.Image:
    """An RGB image -> an 8-bit image of colour keys (times ``scale``: 1 or NUM_KEYS): the code
    4R + 2G + B, plus 8 if some channel is neither 0 nor 255 (so a key of 8 or more is off-palette).

    Table lookups and a channel sum in Pillow's own 8-bit loops, with no numpy temporaries: the
    evaluator's hot path. Keys scaled by NUM_KEYS add to plain ones into one byte per pixel pair.
    """
    summed = rgb.point(_CHANNEL_LUT).convert("L", matrix=(1, 1, 1, 0))
    return summed.point(_SUM_TO_KEY[scale])


def colour_keys(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> H x W uint8 colour keys (see colour_key_image)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB mask, got {rgb.dtype} of shape {rgb.shape}")
    return np.asarray(colour_key_image(Image.fromarray(rgb)))


def decode_mask(rgb: np.ndarray) -> np.ndarray:
    """Turn an H x W x 3 uint8 RGB mask into an H x W uint8 array of class indices."""
    return np.take(KEY_TO_CLASS, colour_keys(rgb))


def encode_mask(classes: np.ndarray) -> np.ndarray:
    """Turn an H x W array of class indices into an H x W x 3 uint8 RGB mask in palette colours."""
    classes = np.asarray(classes)
    if classes.size and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
        raise ValueError(f"class indices must lie in 0..{NUM_CLASSES - 1}")
    return PALETTE[classes]


def count_off_palette(rgb: np.ndarray) -> int:
    """Number of pixels whose colour is not exactly a palette colour."""
    return int(np.count_nonzero(np.take(KEY_OFF_PALETTE, colour_keys(rgb))))

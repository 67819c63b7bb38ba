"""Reading images from disk with one clear error per unreadable file.

Pillow decodes: it reads every mode users have (grayscale, RGBA, palette, 16-bit) and reports
truncated files, where torchvision's own decoders are deprecated since 0.29.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dlcv.errors import UserError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
#: Larger images are refused: 12k x 12k pixels already need 432 MB decoded. (Below Pillow's own hard
#: limit, 2 x Image.MAX_IMAGE_PIXELS, so that this is the limit users meet.)
MAX_PIXELS = 12000 * 12000


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name; an error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise UserError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    return images


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode ``path`` to an H x W x 3 uint8 array, whatever its mode."""
    return np.array(open_rgb(path))


def open_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` to a loaded RGB Pillow image, whatever its mode.

    For work that can stay in Pillow's own loops (the evaluator's colour lookups): turning an image
    into a numpy array costs about as much as decoding a mask.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS below decides
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise UserError(
                        f"{path}: image of {width}x{height} pixels is larger than dlcv reads (at most {MAX_PIXELS})"
                    )
                image.load()
                return _to_rgb(image)
    except UserError:
        raise
    except Image.DecompressionBombError as exc:
        raise UserError(f"{path}: image larger than dlcv reads ({_reason(exc)})") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise UserError(f"{path}: not a readable image ({_reason(exc)})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: keep the top 8 bits rather than clipping.
        values = np.asarray(image, dtype=np.int64)
        shift = 8 if values.max(initial=0) < 65536 else 24
        gray = np.clip(values >> shift, 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))
    if image.mode != "RGB":
        image = image.convert("RGBA").convert("RGB") if image.mode == "P" else image.convert("RGB")
    return image


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def resize_square(array: np.ndarray, size: int | None, nearest: bool = False) -> np.ndarray:
    """A uint8 image (H x W x 3) or class map (H x W) at ``size`` x ``size``: bilinear, or ``nearest`` for
    class maps (no blends of two classes); as it is when ``size`` is None or already its size."""
    if size is None or array.shape[:2] == (size, size):
        return array
    return np.array(Image.fromarray(array).resize((size, size), Image.NEAREST if nearest else Image.BILINEAR))

"""Land-cover figures: image | ground truth | predictions side by side, and outlined overlays."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from dlcv.data.palette import CLASS_NAMES, PALETTE, encode_mask


def mask_legend_handles() -> list[Patch]:
    return [
        Patch(facecolor=colour / 255, edgecolor="0.3", label=name)
        for name, colour in zip(CLASS_NAMES, PALETTE, strict=True)
    ]


def class_borders(classes: np.ndarray, width: int = 1) -> np.ndarray:
    """Boolean map of pixels within ``width`` of a pixel of another class."""
    border = np.zeros(classes.shape, dtype=bool)
    for axis in (0, 1):
        change = np.diff(classes, axis=axis) != 0
        pad = [(0, 0), (0, 0)]
        pad[axis] = (0, 1)
        border |= np.pad(change, pad)
        pad[axis] = (1, 0)
        border |= np.pad(change, pad)
    for _ in range(width - 1):
        border = border | np.roll(border, 1, 0) | np.roll(border, 1, 1)
    return border


def overlay(image: np.ndarray, classes: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Translucent class colours on the image, with each region's border drawn in its full colour."""
    colours = encode_mask(classes).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    border = class_borders(classes, width=max(1, min(classes.shape) // 256))
    blended[border] = colours[border]
    return blended.astype(np.uint8)


def comparison_figure(
    rows: list[tuple[str, np.ndarray, np.ndarray | None, dict[str, np.ndarray]]],
) -> Figure:
    """One row per image: the image, its ground truth (if any), then each labelled prediction."""
    columns = max(1 + (truth is not None) + len(predictions) for _, _, truth, predictions in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(3.2 * columns, 3.2 * len(rows) + 0.8), squeeze=False)
    for row, (name, image, truth, predictions) in zip(axes, rows, strict=True):
        panels = [("image", image)]
        if truth is not None:
            panels.append(("ground truth", encode_mask(truth)))
        panels += [(label, encode_mask(classes)) for label, classes in predictions.items()]
        for axis in row[len(panels) :]:
            axis.axis("off")
        for axis, (label, picture) in zip(row, panels, strict=False):
            axis.imshow(picture, interpolation="nearest")
            axis.set_title(f"{name}: {label}" if label == "image" else label, fontsize=10)
            axis.set_xticks([])  # no ticks, but the frame stays: a white (barren) mask still shows its edge
            axis.set_yticks([])
    figure.legend(handles=mask_legend_handles(), loc="lower center", ncol=len(CLASS_NAMES), frameon=False, fontsize=9)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    return figure


def overlay_figure(name: str, image: np.ndarray, layers: dict[str, np.ndarray]) -> Figure:
    """The image overlaid with each labelled class map (ground truth, predictions), with a legend."""
    figure, axes = plt.subplots(1, len(layers), figsize=(5 * len(layers), 5.6), squeeze=False)
    for axis, (label, classes) in zip(axes[0], layers.items(), strict=True):
        axis.imshow(overlay(image, classes))
        axis.set_title(f"{name}: {label}")
        axis.axis("off")
    figure.legend(handles=mask_legend_handles(), loc="lower center", ncol=len(CLASS_NAMES), frameon=False)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    return figure


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> None:
    figure.savefig(path, dpi=dpi, format="png")
    plt.close(figure)


def snapshot_folders(run_dir: str | Path) -> list[Path]:
    """A run's ``snapshots/epoch_NNN`` folders, in epoch order."""
    return sorted(p for p in (Path(run_dir) / "snapshots").glob("epoch_*") if p.is_dir())


def prediction_folder(path: str | Path, name: str) -> tuple[str, Path]:
    """(label, folder of masks) for a folder of masks, or for a run folder (its last snapshot), called ``name``."""
    from dlcv.errors import UserError

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such folder")
    snapshots = snapshot_folders(path)
    if snapshots:
        return f"{name} ({snapshots[-1].name.replace('_', ' ')})", snapshots[-1]
    return name, path


#: The validation images whose masks the course report shows.
REPORT_IDS = ("0010", "0097", "0107")


def choose_ids(folder: str | Path, available: Collection[str], ids: list[str] | None) -> list[str]:
    """``ids`` (an error naming ``folder`` for any it lacks), or by default the report's ids where present,
    else the first three."""
    from dlcv.errors import UserError

    if ids is None:
        return [i for i in REPORT_IDS if i in available] or sorted(available)[:3]
    unknown = [i for i in ids if i not in available]
    if unknown:
        raise UserError(f"{folder}: no image with id {', '.join(unknown)}")
    return list(ids)


def write_mask_figures(
    data_dir: str | Path, predictions: list[str | Path], ids: list[str] | None, out_dir: str | Path
) -> list[Path]:
    """Side-by-side comparison, per-image overlays, and each run's early/middle/final progress.

    ``data_dir`` holds ``ID_sat.*`` and ``ID_mask.png``; each prediction is a folder of
    ``ID_mask.png`` or a run folder. Returns the figures written into ``out_dir``.
    """
    from dlcv.data.images import read_rgb
    from dlcv.data.landcover import find_pairs
    from dlcv.data.palette import decode_mask
    from dlcv.errors import UserError
    from dlcv.files import distinct_names, staged_dir

    pairs = {pair.id: pair for pair in find_pairs(data_dir)}
    ids = choose_ids(data_dir, pairs, ids)
    names = distinct_names([Path(p) for p in predictions])
    sources = [prediction_folder(p, name) for p, name in zip(predictions, names, strict=True)]

    def read_classes(path: Path) -> np.ndarray:
        if not path.is_file():
            raise UserError(f"{path}: missing")
        return decode_mask(read_rgb(path))

    images = {i: read_rgb(pairs[i].image) for i in ids}
    truths = {i: read_classes(pairs[i].mask) for i in ids}
    predicted = {i: {label: read_classes(folder / f"{i}_mask.png") for label, folder in sources} for i in ids}
    written = []
    with staged_dir(out_dir) as stage:
        save_figure(comparison_figure([(i, images[i], truths[i], predicted[i]) for i in ids]), stage / "compare.png")
        written.append("compare.png")
        for i in ids:
            save_figure(
                overlay_figure(i, images[i], {"ground truth": truths[i], **predicted[i]}), stage / f"overlay_{i}.png"
            )
            written.append(f"overlay_{i}.png")
        for path, name in zip(predictions, names, strict=True):
            stages = snapshot_folders(path)
            if not stages:
                continue
            rows = [
                (i, images[i], truths[i], {s.name.replace("_", " "): read_classes(s / f"{i}_mask.png") for s in stages})
                for i in ids
            ]
            written.append(f"progress_{name.replace('/', '_')}.png")
            save_figure(comparison_figure(rows), stage / written[-1])
    return [Path(out_dir) / name for name in written]

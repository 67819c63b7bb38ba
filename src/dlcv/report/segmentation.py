"""The report's segmentation part: per-class IoU across runs, mask comparisons, early/middle/final masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlcv.data.images import read_rgb
from dlcv.data.landcover import Pair, find_pairs
from dlcv.data.palette import CLASS_NAMES, SCORED_CLASSES, decode_mask
from dlcv.errors import counted
from dlcv.predict import iter_class_maps, load_task
from dlcv.report.html import Column, Section, figure, heading, number, paragraph, table
from dlcv.report.runs import Run
from dlcv.viz.masks import choose_ids, comparison_figure, snapshot_folders

SCORED_NAMES = [CLASS_NAMES[k] for k in SCORED_CLASSES]


def iou_table(runs: list[Run]) -> str:
    """Each run's validation IoU per class and mIoU at its best epoch; the best of each column marked."""
    columns = [
        Column("run"),
        Column("best epoch"),
        *(Column(name, number(4), best="max") for name in SCORED_NAMES),
        Column("mIoU", number(4), best="max"),
    ]
    rows = []
    for run in runs:
        best = run.best
        rows.append(
            [
                run.name,
                int(best["epoch"]) if best else None,
                *(best.get(f"val_iou_{name}") for name in SCORED_NAMES),
                best.get("val_miou"),
            ]
        )
    return table(columns, rows)


def _validation_folder(run: Run) -> Path:
    return Path(str(run.config.get("data", ""))) / "validation"


def _read(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    return read_rgb(pair.image), decode_mask(read_rgb(pair.mask))


def _predicted(run: Run, pairs: list[Pair]) -> dict[str, np.ndarray]:
    """The class maps ``best.ckpt`` predicts for ``pairs``, by id."""
    task = load_task(run.checkpoint, "segment")
    by_path = dict(iter_class_maps(task, [p.image for p in pairs], device="auto", batch_size=1, workers=0))
    return {p.id: by_path[p.image] for p in pairs}


def _stage_label(index: int, count: int, folder: Path) -> str:
    stage = "early" if index == 0 else "final" if index == count - 1 else "middle"
    return f"{stage} ({folder.name.replace('_', ' ')})"


def mask_sections(runs: list[Run], ids: list[str] | None) -> str:
    """Image | ground truth | each run's best-checkpoint mask, per validation folder; then each run's
    early, middle and final masks as saved during training."""
    parts = []
    folders: dict[Path, list[Run]] = {}
    for run in runs:
        folders.setdefault(_validation_folder(run), []).append(run)
    for folder, group in folders.items():
        if not folder.is_dir():
            names = ", ".join(r.name for r in group)
            parts.append(paragraph(f"{folder}: not found here, so no masks are shown for {names}."))
            continue
        pairs = {pair.id: pair for pair in find_pairs(folder)}
        chosen = choose_ids(folder, pairs, ids)
        pictures = {i: _read(pairs[i]) for i in chosen}
        with_checkpoint = [r for r in group if r.checkpoint is not None]
        predictions = {r.name: _predicted(r, [pairs[i] for i in chosen]) for r in with_checkpoint}
        rows = [(i, *pictures[i], {name: masks[i] for name, masks in predictions.items()}) for i in chosen]
        parts.append(heading(f"Validation masks: {counted(len(chosen), 'image')} of {folder}"))
        parts.append(
            figure(
                comparison_figure(rows),
                f"Image | ground truth | the mask each run's best checkpoint predicts ({', '.join(predictions)}).",
            )
        )
        for run in group:
            stages = snapshot_folders(run.path)
            if not stages:
                continue
            saved = set.intersection(
                *({m.name.removesuffix("_mask.png") for m in s.glob("*_mask.png")} for s in stages)
            )
            shown = [i for i in chosen if i in saved] or sorted(i for i in saved if i in pairs)[:3]
            if not shown:
                continue
            rows = [
                (
                    i,
                    *(pictures.get(i) or _read(pairs[i])),
                    {
                        _stage_label(k, len(stages), s): decode_mask(read_rgb(s / f"{i}_mask.png"))
                        for k, s in enumerate(stages)
                    },
                )
                for i in shown
            ]
            parts.append(heading(f"{run.name}: masks during training"))
            parts.append(
                figure(comparison_figure(rows), f"{run.name}: predicted masks at the early, middle and final epoch.")
            )
    return "".join(parts)


def segmentation_section(runs: list[Run], ids: list[str] | None) -> Section:
    body = (
        heading("Per-class IoU on the validation set")
        + paragraph(
            "IoU of each class and their mean (mIoU, the graders' score) at each run's best epoch, computed on the "
            "whole validation set at the masks' own resolution; the best of each column is marked ★."
        )
        + iou_table(runs)
        + mask_sections(runs, ids)
    )
    return Section("segmentation", "Segmentation", body)

"""Scores exactly as the graders compute them, from confusion matrices that can be summed.

A confusion matrix is additive over images, batches and processes, so the same code scores a
streamed folder of masks, a validation epoch, and a multi-GPU run (where the matrices are summed
across processes before any division). numpy only: ``dlcv segment eval`` never imports torch.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Container, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

from dlcv.data.images import open_rgb
from dlcv.data.palette import (
    CLASS_NAMES,
    KEY_OFF_PALETTE,
    KEY_TO_CLASS,
    NUM_CLASSES,
    NUM_KEYS,
    SCORED_CLASSES,
    colour_key_image,
)
from dlcv.errors import UserError, abbreviate, counted


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``num_classes`` x ``num_classes`` int64 counts, rows the true class, columns the predicted one."""
    if truth.shape != predicted.shape:
        raise ValueError(f"shapes differ: {truth.shape} and {predicted.shape}")
    codes = truth.astype(np.int64, copy=False).ravel() * num_classes + predicted.ravel()
    return np.bincount(codes, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each scored class (all but unknown), by the graders' rule.

    True positives, predictions and ground truth of class k are counted over every pixel, unknown
    ground truth included: a pixel of unknown predicted as k is a false positive of k. A class
    absent from both prediction and truth gets NaN (0/0), as in the graders' script.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    scored = list(SCORED_CLASSES)
    tp = np.diag(confusion)[scored]
    predicted = confusion.sum(axis=0)[scored]
    actual = confusion.sum(axis=1)[scored]
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (predicted + actual - tp)


def mean_iou(confusion: np.ndarray) -> float:
    """The graders' mean IoU: the plain mean of the six scored classes' IoU."""
    return float(np.mean(iou_per_class(confusion)))


def accuracy_per_class(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class (its accuracy among its own images); NaN for a class with no images."""
    confusion = np.asarray(confusion, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(confusion) / confusion.sum(axis=1)


@dataclass
class OffPalette:
    """Mask pixels of colours outside the palette (the graders' threshold rule still classes them), and the
    masks that hold them: kept apart for the ground truth and the predictions, whose fixes differ."""

    pixels: int = 0
    masks: list[str] = field(default_factory=list)


@dataclass
class SegmentationScore:
    """The graders' score of a folder of predicted masks, with what was noticed on the way."""

    confusion: np.ndarray
    images: int
    off_palette_truth: OffPalette = field(default_factory=OffPalette)
    off_palette_predicted: OffPalette = field(default_factory=OffPalette)
    unused_predictions: list[str] = field(default_factory=list)

    @property
    def iou(self) -> np.ndarray:
        return iou_per_class(self.confusion)

    @property
    def miou(self) -> float:
        return mean_iou(self.confusion)

    def grader_text(self) -> str:
        """The graders' output, to the character."""
        lines = [f"class #{k} : {value:1.5f}" for k, value in enumerate(self.iou)]
        return "\n".join(lines) + f"\n\nmean_iou: {self.miou:f}\n\n"  # the graders end with a blank line

    def to_json(self) -> str:
        return json.dumps(
            {
                "mean_iou": _finite_or_none(self.miou),
                "iou": {CLASS_NAMES[k]: _finite_or_none(v) for k, v in enumerate(self.iou)},
                "images": self.images,
                "confusion": self.confusion.tolist(),
                "off_palette": {
                    "ground_truth": asdict(self.off_palette_truth),
                    "predictions": asdict(self.off_palette_predicted),
                },
            },
            indent=2,
        )


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


#: Colour key -> one-hot class row: sums the table of key pairs into the class confusion matrix.
_KEY_ONE_HOT = np.eye(NUM_CLASSES, dtype=np.int64)[KEY_TO_CLASS]


def _score_pair(pair: tuple[Path, Path]) -> tuple[np.ndarray, int, int]:
    predicted_path, truth_path = pair
    truth, predicted = open_rgb(truth_path), open_rgb(predicted_path)
    if truth.size != predicted.size:
        raise UserError(
            f"{predicted_path}: prediction is {predicted.width}x{predicted.height} but its ground "
            f"truth {truth_path} is {truth.width}x{truth.height}"
        )
    # Each pixel's pair of colour keys packs into one byte, whose histogram (in Pillow, no numpy
    # temporaries) is a small table: the confusion matrix and off-palette counts are read off it.
    pairs = ImageChops.add_modulo(colour_key_image(truth, NUM_KEYS), colour_key_image(predicted))
    table = np.array(pairs.histogram(), dtype=np.int64).reshape(NUM_KEYS, NUM_KEYS)
    confusion = _KEY_ONE_HOT.T @ table @ _KEY_ONE_HOT
    return confusion, int(table[KEY_OFF_PALETTE].sum()), int(table[:, KEY_OFF_PALETTE].sum())


def truth_masks(truth_dir: str | Path) -> list[Path]:
    """The ground truth as the graders' script reads it: every ``.png`` in its folder, sorted."""
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise UserError(f"{truth_dir}: {'not a folder' if truth_dir.exists() else 'no such folder'}")
    truths = sorted(p for p in truth_dir.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not truths:
        raise UserError(f"{truth_dir}: no ground-truth masks (.png) in this folder")
    return truths


def check_masks_predictable(truth_dir: str | Path, mask_names: Iterable[str], input_dir: str | Path) -> None:
    """An error naming the ground-truth masks (:func:`truth_masks`) that no image of ``input_dir`` will predict
    (``mask_names``): checked before predicting, so that a ``--gt`` of another split fails at once and writes
    nothing, not after the masks."""
    _require_every_truth(truth_masks(truth_dir), set(mask_names), f"{truth_dir}: no image in {input_dir}")


def _require_every_truth(truths: Iterable[Path], available: Container[str], gap: str) -> None:
    """An error, ``gap`` first, naming the ground-truth masks whose file names are not in ``available``."""
    missing = [truth.name for truth in truths if truth.name not in available]
    if missing:
        raise UserError(f"{gap} for {counted(len(missing), 'ground-truth mask')}: {abbreviate(missing)}")


def pair_mask_folders(predicted_dir: str | Path, truth_dir: str | Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair every ground-truth ``.png`` with the prediction of the same file name.

    The ground truth is :func:`truth_masks`. Returns the pairs and the names of predictions that have no
    ground truth.
    """
    predicted_dir, truths = Path(predicted_dir), truth_masks(truth_dir)
    if not predicted_dir.is_dir():
        raise UserError(f"{predicted_dir}: no such folder")
    predictions = {p.name: p for p in predicted_dir.iterdir() if p.suffix.lower() == ".png" and p.is_file()}
    _require_every_truth(truths, predictions, f"{predicted_dir}: no prediction")
    truth_names = {t.name for t in truths}
    unused = sorted(name for name in predictions if name not in truth_names)
    return [(predictions[t.name], t) for t in truths], unused


def evaluate_mask_folders(
    predicted_dir: str | Path, truth_dir: str | Path, workers: int | None = None
) -> SegmentationScore:
    """Score a folder of predicted RGB masks against the ground truth, streaming pair by pair.

    Each worker process holds one pair at a time, so memory stays flat however many masks there
    are; the per-pair confusion matrices are summed.
    """
    pairs, unused = pair_mask_folders(predicted_dir, truth_dir)
    workers = max(1, min(workers or usable_cpus(), len(pairs)))
    if workers == 1:
        score = _accumulate(map(_score_pair, pairs), pairs)
    else:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_reuse_image_memory) as pool:
            score = _accumulate(pool.imap(_score_pair, pairs, chunksize=4), pairs)
    score.unused_predictions = unused
    return score


def _reuse_image_memory() -> None:
    """Let a worker's Pillow keep freed image blocks for the next mask (its PILLOW_BLOCKS_MAX): fresh
    blocks cost page faults, an eighth of the evaluator's time."""
    Image.core.set_blocks_max(max(Image.core.get_blocks_max(), 16))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. under taskset or a container's cpuset), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _accumulate(results, pairs) -> SegmentationScore:
    score = SegmentationScore(np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64), len(pairs))
    for (predicted_path, _), (confusion, off_truth, off_predicted) in zip(pairs, results, strict=True):
        score.confusion += confusion
        for off, found in ((score.off_palette_truth, off_truth), (score.off_palette_predicted, off_predicted)):
            if found:
                off.pixels += found
                off.masks.append(predicted_path.name)
    return score


# ---- classification ----------------------------------------------------------------------------------


@dataclass
class ClassificationScore:
    """Accuracy of predicted labels, overall and per class, from their confusion matrix."""

    confusion: np.ndarray  # rows the true class, columns the predicted one

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def text(self) -> str:
        """``accuracy: 0.7416 (1854/2500)``, then the accuracy of each class that has images."""
        lines = [f"accuracy: {self.accuracy:.4f} ({self.correct}/{self.total})", "", "per-class accuracy:"]
        images = self.confusion.sum(axis=1)
        for k, value in enumerate(accuracy_per_class(self.confusion)):
            if images[k]:
                lines.append(f"class {k}: {value:.4f} ({self.confusion[k, k]}/{images[k]})")
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        images = self.confusion.sum(axis=1)
        return json.dumps(
            {
                "accuracy": _finite_or_none(self.accuracy),
                "correct": self.correct,
                "total": self.total,
                "per_class": {
                    str(k): {"accuracy": float(value), "correct": int(self.confusion[k, k]), "total": int(images[k])}
                    for k, value in enumerate(accuracy_per_class(self.confusion))
                    if images[k]
                },
                "confusion": self.confusion.tolist(),
            },
            indent=2,
        )


def evaluate_label_csv(predictions: str | Path, truth: str | Path) -> ClassificationScore:
    """Score a predictions CSV against a folder of ``<label>_<index>`` images or a label CSV.

    Every ground-truth image needs exactly one prediction, and every prediction a ground truth.
    """
    from dlcv.data.labels import ground_truth, match_names, read_label_csv

    predicted = read_label_csv(predictions)
    expected = ground_truth(truth)
    match_names(predicted, expected, predictions, truth)
    names = sorted(expected)
    truth_labels = np.array([expected[n] for n in names], dtype=np.int64)
    predicted_labels = np.array([predicted[n] for n in names], dtype=np.int64)
    num_classes = int(max(truth_labels.max(), predicted_labels.max())) + 1
    return ClassificationScore(confusion_matrix(truth_labels, predicted_labels, num_classes))

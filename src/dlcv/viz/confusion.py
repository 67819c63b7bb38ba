"""The confusion matrix of a classifier's predictions as a figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from dlcv.files import atomic_path
from dlcv.metrics import ClassificationScore, evaluate_label_csv


def confusion_figure(confusion: np.ndarray, title: str = "") -> Figure:
    """Rows (true classes) normalised to fractions, so that classes of any size read alike; counts in the
    cells when the matrix is small enough to read them."""
    confusion = np.asarray(confusion)
    classes = len(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = confusion / confusion.sum(axis=1, keepdims=True)
    side = min(16.0, max(5.0, 0.24 * classes + 2.5))
    figure, axis = plt.subplots(figsize=(side + 1.2, side))
    image = axis.imshow(np.nan_to_num(fractions), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.02, label="fraction of the true class")
    ticks = np.arange(classes)
    fontsize = 10 if classes <= 20 else 6
    axis.set_xticks(ticks, [str(k) for k in ticks], fontsize=fontsize, rotation=90 if classes > 20 else 0)
    axis.set_yticks(ticks, [str(k) for k in ticks], fontsize=fontsize)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    if classes <= 20:
        for (row, column), count in np.ndenumerate(confusion):
            if count:
                dark = fractions[row, column] > 0.5
                axis.text(column, row, str(count), ha="center", va="center", fontsize=8, color="w" if dark else "k")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def write_confusion_figure(predictions: str | Path, truth: str | Path, output: str | Path) -> ClassificationScore:
    """Score ``predictions`` against ``truth`` (folder or CSV) and draw the confusion matrix into ``output``."""
    score = evaluate_label_csv(predictions, truth)
    figure = confusion_figure(score.confusion, f"accuracy {score.accuracy:.4f} ({score.correct}/{score.total})")
    with atomic_path(output) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    return score

"""The report's classification part: accuracy, per-class accuracy, confusion matrix and t-SNE per run."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np

from dlcv.data.classification import classification_dirs
from dlcv.errors import UserError
from dlcv.metrics import ClassificationScore, accuracy_per_class, evaluate_label_csv
from dlcv.report.html import Column, Section, figure, heading, paragraph, percent, table
from dlcv.report.runs import Run
from dlcv.training.classification import TSNE_CSV, VAL_PREDICTIONS
from dlcv.viz.confusion import confusion_figure
from dlcv.viz.tsne import tsne_figure, write_tsne


def _validation(run: Run) -> tuple[Path, Path] | None:
    """(validation images, their labels: a CSV or that folder); None when the run's data is not here."""
    try:
        _, val_dir, val_csv = classification_dirs(str(run.config.get("data", "")))
    except UserError:
        return None
    return val_dir, val_csv or val_dir


def _score(run: Run) -> ClassificationScore | None:
    """best.ckpt's validation predictions scored as the graders score them, when the run and its data have them
    (and they cover the whole validation set: a run with ``limit_val`` predicted only part of it)."""
    validation = _validation(run)
    predictions = run.path / VAL_PREDICTIONS
    if validation is None or not predictions.is_file() or run.config.get("limit_val") is not None:
        return None
    return evaluate_label_csv(predictions, validation[1])


def accuracy_table(runs: list[Run], scores: dict[str, ClassificationScore | None]) -> str:
    columns = [
        Column("run"),
        Column("best epoch"),
        Column("val accuracy (training)", percent, best="max"),
        Column("best.ckpt's predictions", percent, best="max"),
        Column("correct"),
    ]
    rows = []
    for run in runs:
        score = scores[run.name]
        rows.append(
            [
                run.name,
                int(run.best["epoch"]) if run.best else None,
                run.best.get("val_acc"),
                score.accuracy if score else None,
                f"{score.correct}/{score.total}" if score else "",
            ]
        )
    return table(columns, rows)


def _per_class(run: Run, score: ClassificationScore | None) -> np.ndarray:
    if score is not None:
        return accuracy_per_class(score.confusion)
    columns = sorted(
        (int(key.removeprefix("val_acc_class")), key) for key in run.best if key.startswith("val_acc_class")
    )
    return np.array([run.best[key] for _, key in columns])


def per_class_table(runs: list[Run], scores: dict[str, ClassificationScore | None], per_row: int = 10) -> str:
    """Each run's accuracy on each class, ``per_row`` classes to a table; the best run of each class marked."""
    accuracies = {run.name: _per_class(run, scores[run.name]) for run in runs}
    classes = max(len(a) for a in accuracies.values())
    tables = []
    for first in range(0, classes, per_row):
        chosen = range(first, min(first + per_row, classes))
        columns = [Column("run \\ class"), *(Column(str(k), percent, best="max") for k in chosen)]
        rows = [[name, *(float(a[k]) if k < len(a) else None for k in chosen)] for name, a in accuracies.items()]
        tables.append(table(columns, rows))
    return "".join(tables)


def _tsne_points(run: Run) -> tuple[np.ndarray, np.ndarray, str | None] | None:
    """(points, labels, layer) from the run's ``tsne.csv``, else computed from best.ckpt on the validation images."""
    cached = run.path / TSNE_CSV
    with tempfile.TemporaryDirectory() as tmp:
        if not cached.is_file():
            validation = _validation(run)
            if validation is None or run.checkpoint is None:
                return None
            _, cached = write_tsne(
                run.checkpoint, validation[0], Path(tmp) / "tsne.png", truth=validation[1], workers=0
            )
        with cached.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    points = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    layer = rows[0].get("layer") if rows else None  # tsne.csv files before the layer column: None
    return points, np.array([int(r["label"]) for r in rows]), layer


def run_figures(run: Run, score: ClassificationScore | None) -> str:
    parts = [heading(run.name)]
    if score is None:
        parts.append(
            paragraph(
                f"{run.name}: no {VAL_PREDICTIONS} of the whole validation set here, or no validation data: "
                "no confusion matrix."
            )
        )
    else:
        title = f"{run.name}: accuracy {100 * score.accuracy:.2f}% ({score.correct}/{score.total})"
        parts.append(
            figure(confusion_figure(score.confusion, title), f"Confusion matrix of {run.name} (rows: true class).")
        )
    found = _tsne_points(run)
    if found is None:
        parts.append(paragraph(f"{run.name}: no {TSNE_CSV} and no validation data here: no t-SNE."))
    else:
        points, labels, layer = found
        model = run.config.get("model", "")
        features = f"layer {layer}" if layer else "features"
        fig = tsne_figure(points, labels, f"t-SNE of {model} {features} ({len(points)} validation images)")
        parts.append(figure(fig, f"t-SNE of {run.name}'s features, coloured by true class."))
    return "".join(parts)


def classification_section(runs: list[Run]) -> Section:
    scores = {run.name: _score(run) for run in runs}
    body = (
        heading("Accuracy on the validation set")
        + paragraph(
            "The best epoch's accuracy as measured during training, and the accuracy of best.ckpt's predictions "
            "(val_predictions.csv) scored as the graders score them; the best of each column is marked ★."
        )
        + accuracy_table(runs, scores)
        + heading("Per-class accuracy")
        + per_class_table(runs, scores)
        + heading("Confusion matrix and t-SNE")
        + "".join(run_figures(run, scores[run.name]) for run in runs)
    )
    return Section("classification", "Classification", body)

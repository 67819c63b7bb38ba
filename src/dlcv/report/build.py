"""``dlcv report``: run folders of any task -> one self-contained HTML page."""

from __future__ import annotations

import datetime
import math
import shlex
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt

from dlcv.errors import counted
from dlcv.files import atomic_path
from dlcv.report.classification import classification_section
from dlcv.report.html import Column, Section, figure, heading, number, page, paragraph, percent, preformatted, table
from dlcv.report.runs import Run, read_runs
from dlcv.report.segmentation import segmentation_section

TASK_TITLES = {"segment": "segmentation", "classify": "classification"}
SCORE_TITLES = {"val_miou": "val mIoU", "val_acc": "val accuracy"}


def _score_format(monitor: str):
    return percent if monitor == "val_acc" else number(4)


def by_task(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped by task, in the order the tasks first appear: runs are compared within a task only."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.task, []).append(run)
    return groups


def _summary_table(runs: list[Run]) -> str:
    monitor = runs[0].monitor
    columns = [
        Column("run"),
        Column("model"),
        Column("weights"),
        Column("epochs"),
        Column("validation items"),
        Column("parameters", lambda v: "" if v is None else f"{v:,}"),
        Column("final train loss", number(4), best="min"),
        Column(f"best {SCORE_TITLES[monitor]}", _score_format(monitor), best="max"),
        Column("train time", lambda v: "" if v is None else f"{v / 60:.1f} min"),
        Column("device"),
        Column("commit"),
    ]
    rows = []
    for run in runs:
        limit = run.config.get("limit_val")
        rows.append(
            [
                run.name,
                str(run.config.get("model", "")),
                Path(str(run.config.get("weights", ""))).name,
                f"{len(run.metrics)} of {run.config.get('epochs', '?')}",
                "all" if limit is None else f"limited to {limit}",
                run.parameters,
                run.metrics[-1].get("train_loss") if run.metrics else None,
                run.best.get(monitor),
                run.record.get("wall_s"),
                run.record.get("device", ""),
                run.record.get("commit") or "",
            ]
        )
    return table(columns, rows)


def summary_section(runs: list[Run]) -> Section:
    """Per task, one row per run: what it is and how well it did; the best of each score column marked."""
    tables = "".join(
        heading(TASK_TITLES[task].capitalize()) + _summary_table(group) for task, group in by_task(runs).items()
    )
    repeat = "".join(
        f"<li><code>{escape(shlex.join(['dlcv', run.task, 'train', '--config', str(run.path / 'config.yaml')]))}"
        " --out NEW_RUN</code></li>"
        for run in runs
    )
    body = (
        tables
        + paragraph("★ marks the best of a column: the lowest final loss, the highest validation score.")
        + paragraph("Each run repeats exactly from the configuration its folder keeps:")
        + f"<ul>{repeat}</ul>"
    )
    return Section("runs", "Runs compared", body)


def config_section(runs: list[Run]) -> Section:
    """Every option of every run side by side, per task; rows where runs differ are highlighted."""
    parts = []
    for task, group in by_task(runs).items():
        keys = list(dict.fromkeys(key for run in group for key in run.config))
        columns = [Column("option"), *(Column(run.name) for run in group)]
        rows = [[key, *(_option_text(run.config.get(key)) for run in group)] for key in keys]
        parts.append(heading(TASK_TITLES[task].capitalize()) + table(columns, rows, differing_rows=len(group) > 1))
    note = paragraph("Highlighted rows differ between runs.") if len(runs) > 1 else ""
    return Section("config", "Configuration", note + "".join(parts))


def _option_text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "{}"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def architecture_section(runs: list[Run]) -> Section:
    """Each distinct architecture once, as PyTorch prints it, with the runs that use it."""
    by_text: dict[str, list[str]] = {}
    for run in runs:
        if run.architecture:
            by_text.setdefault(run.architecture.rstrip(), []).append(run.name)
    parts = []
    for text, names in by_text.items():
        summary = text.rsplit("\n\n", 1)[-1]
        parts.append(heading(", ".join(names)) + paragraph(summary.replace("\n", "; ")) + preformatted(text))
    missing = [run.name for run in runs if not run.architecture]
    if missing:
        parts.append(paragraph(f"No architecture.txt in {', '.join(missing)}."))
    return Section("architecture", "Architectures", "".join(parts))


def curves_section(runs: list[Run]) -> Section:
    """Training loss and validation score per epoch, one figure per task."""
    parts = []
    for task, group in by_task(runs).items():
        monitor = group[0].monitor
        fig, (loss_axis, score_axis) = plt.subplots(1, 2, figsize=(11, 3.8))
        for run in group:
            epochs = [row["epoch"] for row in run.metrics]
            loss_axis.plot(epochs, [row.get("train_loss", math.nan) for row in run.metrics], marker="o", label=run.name)
            scores = [row.get(monitor, math.nan) for row in run.metrics]
            if monitor == "val_acc":
                scores = [100 * s for s in scores]
            score_axis.plot(epochs, scores, marker="o", label=run.name)
        loss_axis.set(title="training loss", xlabel="epoch", ylabel="loss")
        score_axis.set(
            title=SCORE_TITLES[monitor], xlabel="epoch", ylabel="accuracy (%)" if monitor == "val_acc" else "mIoU"
        )
        for axis in (loss_axis, score_axis):
            axis.grid(alpha=0.3)
            axis.xaxis.get_major_locator().set_params(integer=True)
            axis.legend(fontsize=8)
        fig.tight_layout()
        parts.append(figure(fig, f"{TASK_TITLES[task].capitalize()}: training loss and {SCORE_TITLES[monitor]}."))
    return Section("curves", "Training curves", "".join(parts))


def build_report(run_dirs: list[str | Path], ids: list[str] | None = None) -> str:
    """The report's HTML for ``run_dirs``; ``ids`` chooses the validation images whose masks are shown."""
    runs = read_runs(run_dirs)
    sections = [summary_section(runs), config_section(runs), architecture_section(runs), curves_section(runs)]
    groups = by_task(runs)
    if "classify" in groups:
        sections.append(classification_section(groups["classify"]))
    if "segment" in groups:
        sections.append(segmentation_section(groups["segment"], ids))
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    meta = f"{counted(len(runs), 'run')}: {', '.join(r.name for r in runs)}. Made by dlcv on {when}."
    return page("dlcv report", meta, sections)


def write_report(run_dirs: list[str | Path], out: str | Path, ids: list[str] | None = None) -> Path:
    """Write the report atomically to ``out``: a reader sees the old page or the new one whole. A bad ``out``
    is refused before minutes of building (the t-SNE of every classifier)."""
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(build_report(run_dirs, ids), encoding="utf-8")
    return out

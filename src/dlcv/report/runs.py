"""A run folder as the report reads it: its resolved config, architecture, per-epoch metrics and, for a
finished run, how it was made (run.json)."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcv.config import CONFIG_NAME, read_yaml
from dlcv.errors import UserError
from dlcv.files import distinct_names
from dlcv.results import RUN_JSON
from dlcv.training.runner import ARCHITECTURE, BEST, METRICS

#: The validation score each task's runs are judged (and checkpointed) by.
MONITOR = {"segment": "val_miou", "classify": "val_acc"}


@dataclass
class Run:
    path: Path
    name: str
    task: str  # "segment" or "classify"
    config: dict[str, Any]
    architecture: str
    metrics: list[dict[str, float]]
    record: dict[str, Any]  # run.json (command, commit, device, wall_s ...); empty for an unfinished run

    @property
    def monitor(self) -> str:
        return MONITOR[self.task]

    @property
    def best(self) -> dict[str, float]:
        """The metrics row of the best epoch (the one ``best.ckpt`` holds)."""
        scored = [row for row in self.metrics if not math.isnan(row.get(self.monitor, math.nan))]
        if not scored:
            return {}
        return max(scored, key=lambda row: row[self.monitor])

    @property
    def checkpoint(self) -> Path | None:
        path = self.path / BEST
        return path if path.is_file() else None

    @property
    def parameters(self) -> int | None:
        """The total parameter count printed at the end of ``architecture.txt``."""
        found = re.search(r"total parameters: ([\d,]+)", self.architecture)
        return int(found.group(1).replace(",", "")) if found else None


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_run(path: str | Path) -> Run:
    """Read a run folder; the task is told by the score its ``metrics.csv`` keeps."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such run folder")
    for name in (CONFIG_NAME, METRICS):
        if not (path / name).is_file():
            raise UserError(f"{path}: not a run folder (no {name})")
    with (path / METRICS).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        metrics = [{key: _number(value) for key, value in row.items()} for row in reader]
    task = next((task for task, monitor in MONITOR.items() if monitor in columns), None)
    if task is None:
        raise UserError(f"{path / METRICS}: has neither {' nor '.join(MONITOR.values())}: not a dlcv run")
    architecture = path / ARCHITECTURE
    return Run(
        record=_read_record(path / RUN_JSON),
        path=path,
        name=path.name,
        task=task,
        config=read_yaml(path / CONFIG_NAME),
        architecture=architecture.read_text(encoding="utf-8") if architecture.is_file() else "",
        metrics=metrics,
    )


def _read_record(path: Path) -> dict[str, Any]:
    """run.json, or nothing where the run has none (unfinished, or older than run.json)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable ({exc})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}: not a run record")
    return record


def read_runs(paths: list[str | Path]) -> list[Run]:
    """Read every run; runs whose folders share a name are told apart by their parent folder."""
    runs = [read_run(p) for p in paths]
    seen = [r.path.resolve() for r in runs]
    duplicates = sorted({str(p) for p in seen if seen.count(p) > 1})
    if duplicates:
        raise UserError(f"{duplicates[0]}: given twice")
    for run, name in zip(runs, distinct_names([r.path for r in runs]), strict=True):
        run.name = name
    return runs

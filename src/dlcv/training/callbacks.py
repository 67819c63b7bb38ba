"""Lightning callbacks shared by every task: per-epoch seeding, metrics.csv, NaN guard."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from dlcv.errors import UserError
from dlcv.files import write_text_atomic


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class EpochSeed(Callback):
    """Reseed every random generator at the start of each epoch from (seed, epoch).

    Each epoch's shuffling, augmentation and dropout are then a function of the seed and the epoch
    alone, so a run resumed at an epoch boundary continues exactly as an uninterrupted one.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        L.seed_everything(self.seed * 1000 + trainer.current_epoch, workers=True, verbose=False)


class MetricsHistory(Callback):
    """Write ``metrics.csv``: one row per finished epoch, rewritten atomically from the history.

    The history lives in the checkpoint (``state_dict``), so a resumed run keeps exactly the rows
    of the epochs it did not redo: none lost, none repeated.
    """

    def __init__(self, path: str | Path, columns: list[str]) -> None:
        self.path = Path(path)
        self.columns = ["epoch", *columns]
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        for column in self.columns[1:]:
            value = metrics.get(column)
            row[column] = float(value) if value is not None else math.nan
        self.rows = [r for r in self.rows if r["epoch"] < trainer.current_epoch] + [row]
        if trainer.is_global_zero:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
            write_text_atomic(self.path, buffer.getvalue())

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))


class FiniteLossGuard(Callback):
    """Stop with a clear message when the training loss stops being a finite number."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss.detach()).all():
            raise TrainingDiverged(
                f"training loss became {float(loss):.4g} at epoch {trainer.current_epoch}, batch {batch_idx}; "
                "the last good checkpoint is kept: try a lower --lr (then --resume, or start over)"
            )

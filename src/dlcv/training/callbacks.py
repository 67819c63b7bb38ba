"""Lightning callbacks shared by every task: per-epoch seeding, metrics.csv, the finite-loss guard."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from dlcv.errors import UserError
from dlcv.files import write_csv_atomic
from dlcv.training.sampling import derived_seed


class TrainingDiverged(UserError):
    """The loss or the weights stopped being finite; the last good checkpoint is kept."""


class EpochSeed(Callback):
    """Reseed every random generator of the training process at the start of each epoch.

    The seed is a function of (seed, epoch, rank) alone, so the randomness drawn in the training
    process (dropout, augmentation of whole batches) replays exactly when a run resumes at an
    epoch boundary. The data order and per-item augmentation come from
    :mod:`dlcv.training.sampling`, which draws nothing from these generators.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed = derived_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        L.seed_everything(seed, workers=True, verbose=False)


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
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        for column in self.columns[1:]:
            value = metrics.get(column)
            row[column] = float(value) if value is not None else math.nan
        self.rows = [r for r in self.rows if r["epoch"] < trainer.current_epoch] + [row]
        if trainer.is_global_zero:
            write_csv_atomic(self.path, self.columns, ([row[column] for column in self.columns] for row in self.rows))

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict.get("rows", []))


class FiniteLossGuard(Callback):
    """Stop with a clear message when the training loss, or the weights at the end of an epoch, stop
    being finite numbers.

    Every process decides together (one process's NaN stops all of them, none waits for a dead
    peer), and the check of the weights runs before the epoch's checkpoints are written, so
    ``last.ckpt`` always holds finite weights.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        finite = loss is None or bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(finite, all=True):
            value = "a non-finite value" if finite else f"{float(loss):.4g}"
            raise TrainingDiverged(
                f"training loss became {value} at epoch {trainer.current_epoch}, batch {batch_idx}; "
                "last.ckpt keeps the last good epoch: lower --lr and start over (--overwrite)"
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        finite = all(bool(torch.isfinite(p.detach()).all()) for p in pl_module.parameters())
        if not trainer.strategy.reduce_boolean_decision(finite, all=True):
            raise TrainingDiverged(
                f"the weights stopped being finite numbers in epoch {trainer.current_epoch}; "
                "last.ckpt keeps the last good epoch: lower --lr and start over (--overwrite)"
            )

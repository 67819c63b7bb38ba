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
    process (dropout, every batch's augmentation on the device) replays exactly when a run resumes
    at an epoch boundary. The data order comes from :mod:`dlcv.training.sampling`, which draws
    nothing from these generators.
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
    peer), and the checks run before the epoch's checkpoints are written, so ``last.ckpt`` always
    holds finite weights. The first non-finite loss (its value and batch) is recorded where the loss
    lies; on a GPU it is read back only every ``gpu_every`` steps and at the end of the epoch, since a
    read waits for the GPU to finish the step, idling it while the next step is prepared. On a CPU,
    where nothing runs ahead, every step is checked.
    """

    def __init__(self, gpu_every: int = 50) -> None:
        self.gpu_every = gpu_every
        self.bad_batch: torch.Tensor | None = None  # the epoch's first batch with a non-finite loss, -1 if none
        self.bad_loss: torch.Tensor | None = None  # its loss

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.bad_batch = self.bad_loss = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            loss = loss.detach().float()
            if self.bad_batch is None:
                self.bad_batch, self.bad_loss = torch.full((), -1, device=loss.device), loss.new_zeros(())
            first = (self.bad_batch < 0) & ~torch.isfinite(loss)
            self.bad_batch = torch.where(first, batch_idx, self.bad_batch)
            self.bad_loss = torch.where(first, loss, self.bad_loss)
        every = 1 if trainer.strategy.root_device.type == "cpu" else self.gpu_every
        if (batch_idx + 1) % every == 0:
            self.check_loss(trainer)

    def check_loss(self, trainer: L.Trainer) -> None:
        batch = -1 if self.bad_batch is None else int(self.bad_batch)
        if not trainer.strategy.reduce_boolean_decision(batch < 0, all=True):
            epoch = trainer.current_epoch
            if batch >= 0:
                what = f"{float(self.bad_loss):.4g} at epoch {epoch}, batch {batch}"
            else:
                what = f"non-finite in another process in epoch {epoch}"
            raise TrainingDiverged(
                f"training loss became {what}; last.ckpt keeps the last good epoch: lower --lr and start over "
                "(--overwrite)"
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_loss(trainer)
        finite = all(bool(torch.isfinite(p.detach()).all()) for p in pl_module.parameters())
        if not trainer.strategy.reduce_boolean_decision(finite, all=True):
            raise TrainingDiverged(
                f"the weights stopped being finite numbers in epoch {trainer.current_epoch}; "
                "last.ckpt keeps the last good epoch: lower --lr and start over (--overwrite)"
            )

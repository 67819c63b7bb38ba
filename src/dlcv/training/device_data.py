"""The training set held as tensors on the training device and augmented there in batches.

The training loader yields only batches of indices (an order drawn from (seed, epoch), each DDP
process its share: :mod:`dlcv.training.sampling`). After Lightning moves a batch of indices to the
device, :meth:`DeviceTrainingData.on_after_batch_transfer` gathers those items from the tensors
already there (moved once) and augments them there: no file reading, decoding or loader worker
stands between two training steps. The augmentation draws from the training
process's generators, which :class:`dlcv.training.callbacks.EpochSeed` reseeds every epoch, so a
resumed run replays it. Validation is an ordinary loader, served unpadded.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from dlcv.training.sampling import training_loader, validation_loader

#: ``augment(images, targets) -> (images, targets)``: a batch gathered on the device, augmented there.
BatchAugmentation = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class DeviceTrainingData(L.LightningDataModule):
    """``images`` (uint8 N x C x H x W) and ``targets`` (labels or masks) moved to the device on first use;
    ``val`` read in batches of ``val_batch_size``, this process's unpadded share."""

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        val: Dataset,
        batch_size: int,
        val_batch_size: int,
        seed: int,
        augment: BatchAugmentation,
    ) -> None:
        super().__init__()
        self.images, self.targets, self.val = images, targets, val
        self.batch_size, self.val_batch_size, self.seed, self.augment = batch_size, val_batch_size, seed, augment
        self.first_epoch = 0

    def train_dataloader(self) -> DataLoader:
        # Pinned index batches reach a GPU by an asynchronous copy: no wait for the step before.
        pin = self.trainer.strategy.root_device.type == "cuda"
        return training_loader(
            range(len(self.images)), self.trainer, self.seed, self.batch_size, epoch=self.first_epoch, pin_memory=pin
        )

    def val_dataloader(self) -> DataLoader:
        return validation_loader(self.val, self.trainer, self.val_batch_size)

    def state_dict(self) -> dict[str, int]:
        # The epoch Lightning will run first when it resumes from this checkpoint.
        return {"first_epoch": self.trainer.fit_loop.epoch_progress.current.processed}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.first_epoch = int(state_dict.get("first_epoch", 0))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is None or not self.trainer.training:
            return batch
        return self.training_batch(batch)

    def training_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The items at ``indices`` gathered on the indices' device (the set moves there once) and augmented."""
        if self.images.device != indices.device:
            self.images, self.targets = self.images.to(indices.device), self.targets.to(indices.device)
        return self.augment(self.images[indices], self.targets[indices])

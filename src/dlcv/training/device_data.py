"""The training set held as tensors on the training device and augmented there in batches.

The training loader yields only batches of indices (an order drawn from (seed, epoch), each DDP
process its share: :mod:`dlcv.training.sampling`). After Lightning moves a batch of indices to the
device, :meth:`DeviceTrainingData.on_after_batch_transfer` gathers those items from the tensors
already there (moved once) and augments them with tensor ops: no file reading, decoding or
per-item work stands between two training steps. The augmentation draws from the training
process's generators, which :class:`dlcv.training.callbacks.EpochSeed` reseeds every epoch, so a
resumed run replays it. Validation is an ordinary loader, served unpadded.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from dlcv.training.sampling import LoaderData, training_loader

#: ``augment(images, targets) -> (images, targets)``: a batch gathered on the device, augmented there.
BatchAugmentation = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class DeviceTrainingData(LoaderData):
    """``images`` (uint8 N x C x H x W) and ``targets`` (labels or masks) moved to the device on first use."""

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        val: DataLoader,
        batch_size: int,
        seed: int,
        augment: BatchAugmentation,
    ) -> None:
        super().__init__(DataLoader(range(len(images)), batch_size=batch_size), val, seed)
        self.images, self.targets = images, targets
        self.augment = augment

    def train_dataloader(self) -> DataLoader:
        return training_loader(
            self.train.dataset, self.trainer, self.seed, self.train.batch_size, epoch=self.first_epoch
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is None or not self.trainer.training:
            return batch
        device = batch.device
        if self.images.device != device:
            self.images, self.targets = self.images.to(device), self.targets.to(device)
        return self.augment(self.images[batch], self.targets[batch])

"""Which items each process reads, and in which order.

The order of a training epoch is a function of (seed, epoch) alone, and the augmentation drawn in
the training process is reseeded from (seed, epoch, rank) (:class:`dlcv.training.callbacks.EpochSeed`):
a run resumed after a kill replays its epoch exactly. Under DDP each process takes its share;
validation shares are not padded, so every validation item is counted exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dlcv.errors import UserError, counted


def derived_seed(*keys: int) -> int:
    """A well-mixed 32-bit seed from non-negative integers (the run's seed, the epoch, an item...)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


class EpochOrder(DistributedSampler):
    """This process's share of a permutation drawn from (seed, epoch), padded by wrapping around so that
    every process takes the same number of steps (DDP needs it).

    Lightning sets the epoch (``set_epoch``) before each epoch's iterator is created, except for the
    first epoch of a resumed run, whose iterator it creates before restoring the loops: that epoch
    is given at construction.
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int, seed: int, epoch: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
        self.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        order = (order * math.ceil(self.total_size / max(1, len(order))))[: self.total_size]
        return iter(order[self.rank : self.total_size : self.num_replicas])


def training_loader(
    dataset: Dataset,
    trainer: L.Trainer,
    seed: int,
    batch_size: int,
    drop_last: bool = True,
    epoch: int = 0,
    **options: Any,
) -> DataLoader:
    """A training loader in :class:`EpochOrder`; ``drop_last`` only where a process has more than a batch.

    The loader has its own generator, so creating its iterator draws nothing from the global one.
    ``epoch`` is the first epoch this fit() runs (see :class:`EpochOrder`).
    """
    order = EpochOrder(dataset, trainer.world_size, trainer.global_rank, seed, epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order,
        drop_last=drop_last and order.num_samples > batch_size,
        generator=torch.Generator(),
        **options,
    )


def validation_loader(dataset: Dataset, trainer: L.Trainer, batch_size: int, **options: Any) -> DataLoader:
    """This process's share of the validation set, in order and unpadded: each item is scored exactly once."""
    processes = trainer.world_size
    if len(dataset) < processes:
        raise UserError(
            f"the validation set has {counted(len(dataset), 'item')}, fewer than the {processes} processes "
            "(--devices x --num-nodes): each process needs at least one"
        )
    sampler = UnrepeatedDistributedSampler(dataset, num_replicas=processes, rank=trainer.global_rank, shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **options)

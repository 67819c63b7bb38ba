"""The training set on the device: index batches in, the right items (augmented) out; validation untouched."""

import lightning as L
import pytest
import torch

from dlcv.training.device_data import DeviceTrainingData
from tests.conftest import DEVICES


class Recorder(L.LightningModule):
    """Trains nothing: keeps what each training and validation step receives."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[str, list] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append(batch)
        return self.weight * 0

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("device", DEVICES)
def test_training_batches_are_gathered_and_augmented_on_the_device_and_validation_passes_through(device):
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    targets = torch.arange(10) * 100
    val = list(zip(images[:3], targets[:3], strict=True))
    data = DeviceTrainingData(
        images, targets, val, batch_size=4, val_batch_size=2, seed=7, augment=lambda x, y: (x.float() + 0.5, y + 1)
    )
    model = Recorder()
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=data)
    train = model.seen["train"]
    assert len(train) == 4  # 10 items in batches of 4, the last partial batch dropped, 2 epochs
    assert {t.device.type for batch in train for t in batch} == {device}
    train = [(batch_images.cpu(), batch_targets.cpu()) for batch_images, batch_targets in train]
    for batch_images, batch_targets in train:
        items = (batch_targets - 1) // 100  # which items the batch holds, from their augmented targets
        assert torch.equal(batch_images, images[items].float() + 0.5)
    first_epoch = torch.cat([t for _, t in train[:2]])
    assert len(set(first_epoch.tolist())) == 8  # no item twice in an epoch
    assert not torch.equal(first_epoch, torch.cat([t for _, t in train[2:]]))  # a new order each epoch
    val_images, val_targets = zip(*model.seen["val"], strict=True)
    assert torch.equal(torch.cat(val_targets).cpu(), torch.cat([targets[:3]] * 2))  # every validation item, as given
    assert torch.cat(val_images).dtype == torch.uint8

"""Land-cover segmentation as a Lightning task, and the training entry point behind the CLI.

The training pairs live as uint8 tensors on the training device, and each batch is zoomed, cropped,
flipped and turned there, pair by pair but in one sampling call (:class:`dlcv.data.transforms.LandCoverAugment`,
:mod:`dlcv.training.device_data`).
Validation reads the pairs from memory at their full size, so it scores at the graders' resolution.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torchmetrics.classification import MulticlassConfusionMatrix

from dlcv.config import SegmentConfig
from dlcv.data.landcover import LandCoverDataset
from dlcv.data.palette import CLASS_NAMES, NUM_CLASSES, encode_mask
from dlcv.data.transforms import LandCoverAugment
from dlcv.errors import UserError
from dlcv.files import atomic_path
from dlcv.metrics import iou_per_class
from dlcv.training.device_data import DeviceTrainingData
from dlcv.training.losses import SegmentationLoss, class_weight_vector
from dlcv.training.runner import RunSummary, check_training_share, fit, prepare_run
from dlcv.training.task import Task, build_task

log = logging.getLogger("dlcv")
IOU_COLUMNS = [f"val_iou_{name}" for name in CLASS_NAMES[:-1]]


class SegmentationTask(Task):
    """A loss over all 7 classes (unknown too: the graders score it as an error), cross-entropy by default.

    ``loss`` is a spec of :mod:`dlcv.training.losses` (``ce+lovasz`` ...); ``class_weights`` one weight per class.
    """

    def __init__(
        self,
        *args,
        image_size: int | None = None,
        loss: str = "ce",
        class_weights: list[float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()
        self.criterion = SegmentationLoss(loss, class_weights)
        self.val_confusion = MulticlassConfusionMatrix(self.hparams.num_classes, validate_args=False)

    def predict_logits(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Class scores at ``size`` (the mask's resolution), whatever resolution the model ran at."""
        logits = self(images)
        if logits.shape[-2:] != tuple(size):
            logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        return logits

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, masks = batch
        loss = self.criterion(self(images), masks)
        self.log(
            "train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(images)
        )
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, masks = batch
        predicted = self.predict_logits(images, masks.shape[-2:]).argmax(dim=1)
        self.val_confusion.update(predicted, masks)

    def on_validation_epoch_end(self) -> None:
        # The confusion matrix is summed across processes before any division: exact under DDP.
        iou = iou_per_class(self.val_confusion.compute().cpu().numpy())
        self.val_confusion.reset()
        self.log("val_miou", float(np.nanmean(iou)), prog_bar=True)
        for column, value in zip(IOU_COLUMNS, iou, strict=True):
            self.log(column, float(value))


def snapshot_epochs(max_epochs: int) -> set[int]:
    """First, middle and last epoch: the report's early, middle and final stage."""
    return {0, (max_epochs - 1) // 2, max_epochs - 1}


class MaskSnapshots(Callback):
    """Save the predicted masks of chosen validation images at the first, middle and last epoch."""

    def __init__(self, dataset: LandCoverDataset, ids: list[str], folder: Path) -> None:
        index = {id_: i for i, id_ in enumerate(dataset.ids)}
        self.items = [(id_, index[id_]) for id_ in ids if id_ in index]
        self.dataset = dataset
        self.folder = folder

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: SegmentationTask) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or not trainer.is_global_zero or epoch not in snapshot_epochs(trainer.max_epochs):
            return
        for id_, i in self.items:
            image, mask = self.dataset.images[i], self.dataset.masks[i]
            with torch.no_grad():
                logits = pl_module.predict_logits(image[None].to(pl_module.device), mask.shape[-2:])
            classes = logits.argmax(dim=1)[0].cpu().numpy().astype(np.uint8)
            path = self.folder / f"epoch_{epoch:03d}" / f"{id_}_mask.png"
            with atomic_path(path) as tmp:
                Image.fromarray(encode_mask(classes)).save(tmp, format="PNG")


def _data_dirs(data: str) -> tuple[Path, Path]:
    root = Path(data)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    train, validation = root / "train", root / "validation"
    for folder in (train, validation):
        if not folder.is_dir():
            raise UserError(f"{folder}: missing (the data folder must hold train/ and validation/)")
    return train, validation


def train_segmentation(
    config: SegmentConfig, command: str, resume: bool = False, overwrite: bool = False
) -> RunSummary:
    """Check the data and the run folder, then train; every pair is decoded (and so checked) first. ``command``,
    the command line that asked for the run, goes into run.json."""
    run_dir = Path(config.out)
    commit = prepare_run(config, "segment", resume, overwrite)
    train_dir, val_dir = _data_dirs(config.data)
    train_set = LandCoverDataset(train_dir, config.image_size, limit=config.limit_train, workers=config.workers)
    val_set = LandCoverDataset(
        val_dir, config.image_size, resize_masks=False, limit=config.limit_val, workers=config.workers
    )
    for dataset in (train_set, val_set):
        if dataset.off_palette_pixels:
            log.warning(
                "%d pixels in %d masks of %s are off-palette; mapped by the graders' threshold rule (first: %s)",
                dataset.off_palette_pixels,
                len(dataset.off_palette_masks),
                dataset.folder,
                dataset.off_palette_masks[0],
            )
    check_training_share(config, len(train_set), train_dir)
    if not train_set.uniform_size():
        raise UserError(f"{train_set.odd_size()}: not the size of the other training pairs; pass --image-size")
    crop = config.crop_size or config.image_size or min(train_set.images.shape[-2:])
    augment = LandCoverAugment(crop, config.min_scale, config.zoom_range())

    task = build_task(
        SegmentationTask,
        config,
        NUM_CLASSES,
        resume,
        image_size=config.image_size,
        loss=config.loss,
        class_weights=class_weight_vector(config.class_weights, CLASS_NAMES),
    )
    val_batch_size = config.batch_size if val_set.uniform_size() else 1  # pairs of mixed sizes do not stack
    data = DeviceTrainingData(
        train_set.images, train_set.masks, val_set, config.batch_size, val_batch_size, config.seed, augment
    )
    return fit(
        task,
        config,
        data,
        monitor="val_miou",
        metric_columns=["train_loss", "val_miou", *IOU_COLUMNS],
        resume=resume,
        command=command,
        commit=commit,
        callbacks=[MaskSnapshots(val_set, list(config.snapshot_ids), run_dir / "snapshots")],
    )

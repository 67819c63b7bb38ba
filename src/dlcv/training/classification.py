"""Image classification as a Lightning task, with the training set held and augmented on the training device.

The training images live in one uint8 tensor on the device (:mod:`dlcv.training.device_data`).
Under DDP validation shares are not padded, so the confusion matrix summed across processes counts
every image exactly once.
"""

from __future__ import annotations

import logging
from itertools import chain
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import AveragedModel
from torchmetrics.classification import MulticlassConfusionMatrix

from dlcv.config import ClassifyConfig
from dlcv.data.batch_augment import BatchAugment
from dlcv.data.classification import ClassificationDataset, classification_dirs
from dlcv.data.labels import write_label_csv
from dlcv.errors import UserError
from dlcv.metrics import accuracy_per_class
from dlcv.predict import classify_images, device_for, load_task
from dlcv.training.device_data import DeviceTrainingData
from dlcv.training.runner import BEST, LAST, RunSummary, fit, is_launching_process, prepare_run
from dlcv.training.task import Task, build_task, read_checkpoint

log = logging.getLogger("dlcv")
#: Written into the run folder after training: best.ckpt's validation predictions, in the graders' format.
VAL_PREDICTIONS = "val_predictions.csv"
#: The t-SNE points that ``dlcv reproduce`` (or ``classify tsne --output RUN/tsne.png``) keeps for the report.
TSNE_CSV = "tsne.csv"


def class_columns(num_classes: int) -> list[str]:
    return [f"val_acc_class{k}" for k in range(num_classes)]


class ClassificationTask(Task):
    """Cross-entropy (with label smoothing; soft targets once mixed) and validation accuracy."""

    def __init__(self, *args, image_size: int | None = None, label_smoothing: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()
        self.val_confusion = MulticlassConfusionMatrix(self.hparams.num_classes, validate_args=False)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images).float()
        loss = F.cross_entropy(logits, targets, label_smoothing=self.hparams.label_smoothing)
        self.log(
            "train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(images)
        )
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        self.val_confusion.update(self(images).argmax(dim=1), labels)

    def on_validation_epoch_end(self) -> None:
        # Summed across processes before any division: exact under DDP, and the same on every process.
        confusion = self.val_confusion.compute().cpu().numpy()
        self.val_confusion.reset()
        self.log("val_acc", float(np.trace(confusion) / max(1, confusion.sum())), prog_bar=True)
        per_class = accuracy_per_class(confusion)
        self.log_dict(dict(zip(class_columns(len(confusion)), map(float, per_class), strict=True)))


class WarmedEMA(AveragedModel):
    """An exponential moving average of a model's weights and buffers whose decay after n updates is
    min(decay, (1 + n) / (10 + n)); the first update copies the model.

    A plain EMA starts from the random initial weights and keeps ``decay ** steps`` of them: at 0.999,
    still 42% after 5 epochs of 175 steps and 7% after 15. The warm-up (timm's and TensorFlow's rule)
    lets the average follow the model early and reach ``decay`` after (10 decay - 1) / (1 - decay) updates
    (8,991 at 0.999); in a shorter run it averages over about the last ninth of its steps. Integer buffers
    (batch-norm's counters) are copied, not averaged. torch's own ``update_parameters`` asks the host
    whether the count is 0 and takes the decay as a Python number: on a GPU, waits for every step to end.
    Here the count, the decay and the first copy (a step of weight 1) stay on the device.
    """

    def __init__(self, model: torch.nn.Module, decay: float, device: torch.device | None = None) -> None:
        super().__init__(model, device=device, use_buffers=True)
        self.decay = decay

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        count = self.n_averaged
        weight = torch.where(count == 0, 1.0, 1 - torch.clamp((1 + count) / (10 + count), max=self.decay))
        averaged, current, counters, counts = [], [], [], []
        ours, theirs = (chain(m.parameters(), m.buffers()) for m in (self.module, model))
        for mine, its in zip(ours, theirs, strict=True):
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(its.detach())
            else:
                counters.append(mine)
                counts.append(its.detach())
        if averaged:  # averaged += weight * (current - averaged), the weight a tensor on the device
            steps = torch._foreach_sub(current, averaged)
            torch._foreach_mul_(steps, weight)
            torch._foreach_add_(averaged, steps)
        if counters:
            torch._foreach_copy_(counters, counts)
        self.n_averaged += 1


class WeightEMA(WeightAveraging):
    """Lightning's weight averaging (the average validated, saved in checkpoints and restored on resume)
    with a :class:`WarmedEMA` for average."""

    def __init__(self, decay: float) -> None:
        super().__init__()
        self.decay = decay

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # where WeightAveraging builds its plain AveragedModel
            self._average_model = WarmedEMA(pl_module, self.decay, device=pl_module.device)


def train_classification(
    config: ClassifyConfig, command: str, resume: bool = False, overwrite: bool = False
) -> RunSummary:
    """Check the data and the run folder, train, then write best.ckpt's validation predictions. ``command``, the
    command line that asked for the run, goes into run.json."""
    run_dir = Path(config.out)
    commit = prepare_run(config, "classify", resume, overwrite)
    train_dir, val_dir, val_csv = classification_dirs(config.data)
    train_set = ClassificationDataset(train_dir, None, config.image_size, config.limit_train, config.workers)
    val_set = ClassificationDataset(val_dir, val_csv, config.image_size, config.limit_val, config.workers)
    num_classes = max(train_set.num_classes, val_set.num_classes)
    if resume and (trained := int(read_checkpoint(run_dir / LAST)[0]["num_classes"])) != num_classes:
        raise UserError(f"{run_dir / LAST}: trained for {trained} classes, but {config.data} has {num_classes}")
    log.info("data: %d training and %d validation images, %d classes", len(train_set), len(val_set), num_classes)
    augment = BatchAugment(num_classes, config.crop_padding, config.flip, config.policy, config.mixup, config.cutmix)
    callbacks = [WeightEMA(config.ema)] if config.ema else []

    task = build_task(
        ClassificationTask,
        config,
        num_classes,
        resume,
        image_size=config.image_size,
        label_smoothing=config.label_smoothing,
    )
    if is_launching_process():  # what an earlier model made goes (the run folder's other files go in fit())
        stale = [TSNE_CSV, Path(TSNE_CSV).with_suffix(".png").name] + ([] if resume else [VAL_PREDICTIONS])
        for name in stale:
            (run_dir / name).unlink(missing_ok=True)
    data = DeviceTrainingData(
        train_set.images,
        train_set.labels,
        val_set,
        config.batch_size,
        max(256, config.batch_size),
        config.seed,
        augment,
    )
    summary = fit(
        task,
        config,
        data,
        monitor="val_acc",
        metric_columns=["train_loss", "val_acc", *class_columns(num_classes)],
        resume=resume,
        command=command,
        commit=commit,
        callbacks=callbacks,
    )
    if summary.is_global_zero and (run_dir / BEST).is_file():
        write_val_predictions(run_dir, val_set, config)
    return summary


def write_val_predictions(run_dir: Path, val_set: ClassificationDataset, config: ClassifyConfig) -> None:
    """best.ckpt's predictions for the validation images, as ``image_id,label`` (read by the HTML report)."""
    task = load_task(run_dir / BEST, "classify")
    predicted = classify_images(task, val_set.images, device_for(config.device), batch_size=max(256, config.batch_size))
    write_label_csv(run_dir / VAL_PREDICTIONS, val_set.names, predicted)

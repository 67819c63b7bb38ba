"""Owning a run folder: refusing to clobber another run, resuming, and building the Trainer."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from dlcv.config import CONFIG_NAME, TrainConfig, config_to_yaml
from dlcv.errors import UserError
from dlcv.files import atomic_path, write_text_atomic
from dlcv.models.describe import describe_module
from dlcv.training.callbacks import EpochSeed, FiniteLossGuard, MetricsHistory
from dlcv.training.sampling import LoaderData

BEST, LAST, METRICS, ARCHITECTURE = "best.ckpt", "last.ckpt", "metrics.csv", "architecture.txt"
#: Files whose presence means a folder already holds a run.
RUN_MARKERS = (CONFIG_NAME, BEST, LAST, METRICS, ARCHITECTURE)
#: Environment variables by which launchers (Lightning's own, torchrun, SLURM) give a process its rank or node.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename: a kill mid-write leaves the old one whole."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


@dataclass
class RunSummary:
    run_dir: Path
    monitor: str
    best_score: float | None
    best_checkpoint: Path
    epochs: int
    wall_s: float
    is_global_zero: bool = True  # False in the other processes of a multi-process run


def is_launching_process() -> bool:
    """False in a process that a launcher started as anything but global rank 0 (of several)."""
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: resuming needs ``last.ckpt``; another run is replaced only with ``overwrite``.

    Only the launching process checks: the other processes of a multi-process run start after it
    (or beside it) and may already see the files it writes.
    """
    if not is_launching_process():
        return
    if resume:
        if not (run_dir / LAST).is_file():
            raise UserError(f"{run_dir}: nothing to resume (no {LAST})")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: exists and is not a folder")
    present = [name for name in RUN_MARKERS if (run_dir / name).exists()]
    if present and not overwrite:
        raise UserError(f"{run_dir}: already holds a run ({', '.join(present)}); pass --resume or --overwrite")


def clear_run_dir(run_dir: Path) -> None:
    for name in RUN_MARKERS:
        (run_dir / name).unlink(missing_ok=True)
    for folder in ("snapshots",):
        shutil.rmtree(run_dir / folder, ignore_errors=True)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete what a killed run left half-written (``atomic_path``'s ``.NAME.*.tmp`` files)."""
    for stale in run_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


class _RunFolder(Callback):
    """Global rank 0 prepares the run folder once every process has started: a fresh run's old
    files go, a resumed run's half-written temporaries go, config.yaml and architecture.txt come."""

    def __init__(self, run_dir: Path, files: dict[str, str], fresh: bool) -> None:
        self.run_dir, self.files, self.fresh = run_dir, files, fresh

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        if self.fresh:
            clear_run_dir(self.run_dir)
        remove_stale_temporaries(self.run_dir)
        for name, text in self.files.items():
            write_text_atomic(self.run_dir / name, text)


def accelerator_for(device: str) -> str:
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU is visible")
        return "gpu"
    if device == "cpu":
        return "cpu"
    raise UserError(f"--device {device}: choose auto, cpu or cuda")


def precision_for(config: TrainConfig, accelerator: str) -> str:
    if config.precision != "auto":
        return config.precision
    return "bf16-mixed" if accelerator == "gpu" else "32-true"


def optimise_for_device(task: L.LightningModule, config: TrainConfig, accelerator: str) -> None:
    """On a GPU: TF32 matmuls and channels-last weights (tensor cores run convolutions in NHWC; cuDNN
    then picks NHWC kernels for every convolution). ``config.compile``: torch.compile the model in place
    (its state-dict keys are unchanged, so checkpoints load with or without it)."""
    if accelerator == "gpu":
        torch.set_float32_matmul_precision("high")
        task.model.to(memory_format=torch.channels_last)
    if config.compile:
        task.model.compile()


def out_of_memory_message(batch_size: int) -> str:
    if batch_size > 1:
        return f"out of GPU memory at batch size {batch_size}; try --batch-size {batch_size // 2}"
    return "out of GPU memory even at batch size 1; try smaller images or a smaller model"


def fit(
    task: L.LightningModule,
    config: TrainConfig,
    train_loader: DataLoader | L.LightningDataModule,
    val_loader: DataLoader | None,
    monitor: str,
    metric_columns: list[str],
    resume: bool,
    callbacks: Sequence[Callback] = (),
) -> RunSummary:
    """Train ``task`` into ``config.out``, keeping best/last checkpoints, metrics.csv and config.yaml.

    The data come as two plain loaders, which fit() serves again with the samplers of
    :mod:`dlcv.training.sampling` (training a function of (seed, epoch); validation unpadded under
    DDP), or as a LightningDataModule (``val_loader`` None) whose loaders already use them.
    """
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    accelerator = accelerator_for(config.device)
    optimise_for_device(task, config, accelerator)
    data = LoaderData(train_loader, val_loader, config.seed) if isinstance(train_loader, DataLoader) else train_loader
    files = {
        CONFIG_NAME: config_to_yaml(config),
        ARCHITECTURE: describe_module(task.model, config.model, task.hparams.num_classes) + "\n",
    }
    # Two checkpoints: the best by ``monitor``, and the latest every epoch (Lightning's own
    # save_last only writes when a best checkpoint is written).
    best, last = (
        ModelCheckpoint(
            dirpath=run_dir,
            filename=Path(name).stem,
            monitor=watch,
            mode="max",
            save_top_k=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )
        for name, watch in ((BEST, monitor), (LAST, None))
    )
    processes = config.devices * config.num_nodes
    try:
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=config.devices,
            num_nodes=config.num_nodes,
            strategy="ddp" if processes > 1 else "auto",
            precision=precision_for(config, accelerator),
            max_epochs=config.epochs,
            deterministic=config.deterministic,
            callbacks=[
                _RunFolder(run_dir, files, fresh=not resume),
                EpochSeed(config.seed),
                FiniteLossGuard(),
                MetricsHistory(run_dir / METRICS, metric_columns),
                *callbacks,
                best,
                last,
            ],
            plugins=[AtomicCheckpointIO()],
            logger=False,
            default_root_dir=run_dir,
            num_sanity_val_steps=0,
            log_every_n_steps=10,
        )
    except (MisconfigurationException, ValueError) as exc:  # the user's devices, nodes or precision
        raise UserError(f"--device/--devices/--num-nodes/--precision: {str(exc).splitlines()[0]}") from None
    started = time.perf_counter()
    with warnings.catch_warnings():
        # The run folder holds config.yaml by design; validation scores come from confusion matrices
        # already summed across processes, so Lightning's advice to average them is beside the point.
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")
        warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")
        try:
            trainer.fit(task, datamodule=data, ckpt_path=str(run_dir / LAST) if resume else None)
        except torch.cuda.OutOfMemoryError:
            raise UserError(out_of_memory_message(config.batch_size)) from None
        except RuntimeError as exc:
            if config.deterministic and "deterministic implementation" in str(exc):
                operation = str(exc).split(",")[0]
                raise UserError(f"--deterministic: {operation} on this device; train without it") from None
            raise
    return RunSummary(
        run_dir=run_dir,
        monitor=monitor,
        best_score=float(best.best_model_score) if best.best_model_score is not None else None,
        best_checkpoint=run_dir / BEST,
        epochs=trainer.current_epoch,
        wall_s=time.perf_counter() - started,
        is_global_zero=trainer.is_global_zero,
    )

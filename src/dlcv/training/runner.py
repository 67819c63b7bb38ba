"""Owning a run folder: refusing to clobber another run, resuming, and building the Trainer."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dlcv.config import CONFIG_NAME, TrainConfig, config_to_yaml
from dlcv.errors import UserError
from dlcv.files import atomic_path, write_text_atomic
from dlcv.models.describe import describe_module
from dlcv.training.callbacks import EpochSeed, FiniteLossGuard, MetricsHistory

BEST, LAST, METRICS, ARCHITECTURE = "best.ckpt", "last.ckpt", "metrics.csv", "architecture.txt"
#: Files whose presence means a folder already holds a run.
RUN_MARKERS = (CONFIG_NAME, BEST, LAST, METRICS, ARCHITECTURE)


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


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: resuming needs ``last.ckpt``; another run is replaced only with ``overwrite``."""
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


def fit(
    task: L.LightningModule,
    config: TrainConfig,
    train_loader,
    val_loader,
    monitor: str,
    metric_columns: list[str],
    resume: bool,
    callbacks: list[Callback] = (),
) -> RunSummary:
    """Train ``task`` into ``config.out``, keeping best/last checkpoints, metrics.csv and config.yaml."""
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / CONFIG_NAME, config_to_yaml(config))
    write_text_atomic(run_dir / ARCHITECTURE, describe_module(task.model, config.model, task.hparams.num_classes) + "\n")
    accelerator = accelerator_for(config.device)
    if accelerator == "gpu":
        torch.set_float32_matmul_precision("high")
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
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy="ddp" if config.devices * config.num_nodes > 1 else "auto",
        precision=precision_for(config, accelerator),
        max_epochs=config.epochs,
        deterministic=config.deterministic,
        callbacks=[
            EpochSeed(config.seed),
            MetricsHistory(run_dir / METRICS, metric_columns),
            FiniteLossGuard(),
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
    L.seed_everything(config.seed, workers=True, verbose=False)
    started = time.perf_counter()
    trainer.fit(task, train_loader, val_loader, ckpt_path=str(run_dir / LAST) if resume else None)
    return RunSummary(
        run_dir=run_dir,
        monitor=monitor,
        best_score=float(best.best_model_score) if best.best_model_score is not None else None,
        best_checkpoint=run_dir / BEST,
        epochs=trainer.current_epoch,
        wall_s=time.perf_counter() - started,
    )

"""Owning a run folder: refusing to clobber another run, resuming, and building the Trainer."""

from __future__ import annotations

import math
import os
import shutil
import signal
import time
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dlcv.config import CONFIG_NAME, TrainConfig, config_to_yaml
from dlcv.errors import UserError
from dlcv.files import atomic_path, make_folder, write_text_atomic
from dlcv.models import get_entry, runs_channels_last
from dlcv.models.describe import describe_module
from dlcv.models.weights import check_weights_spec
from dlcv.results import RUN_JSON, source_commit, write_run_record
from dlcv.training.callbacks import EpochSeed, FiniteLossGuard, MetricsHistory

BEST, LAST, METRICS, ARCHITECTURE = "best.ckpt", "last.ckpt", "metrics.csv", "architecture.txt"
#: Files whose presence means a folder already holds a run.
RUN_MARKERS = (CONFIG_NAME, BEST, LAST, METRICS, ARCHITECTURE, RUN_JSON)
#: What a checkpoint kept for its weights holds: the keys of Lightning's own weights-only checkpoints
#: (less the data module's state).
WEIGHTS_ONLY_KEYS = frozenset(
    ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "hyper_parameters", "hparams_name")
)
#: Environment variables by which launchers (Lightning's own, torchrun, SLURM) give a process its rank or node.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file and rename: a kill mid-write leaves the old one whole.

    Checkpoints named in ``weights_only`` keep :data:`WEIGHTS_ONLY_KEYS` alone (no optimiser or callback
    state: resuming reads another). Trimmed here rather than by ModelCheckpoint's save_weights_only, which
    skips the callbacks' on_save_checkpoint, where WeightAveraging (--ema) puts the averaged weights.
    """

    def __init__(self, weights_only: Collection[str] = ()) -> None:
        super().__init__()
        self.weights_only = frozenset(weights_only)

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if Path(path).name in self.weights_only:
            checkpoint = {key: value for key, value in checkpoint.items() if key in WEIGHTS_ONLY_KEYS}
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


@dataclass
class RunSummary:
    run_dir: Path
    monitor: str
    best_score: float | None
    best_checkpoint: Path
    epochs: int
    wall_s: float  # this session's; run.json keeps the whole run's
    is_global_zero: bool = True  # False in the other processes of a multi-process run


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; last.ckpt holds the last finished epoch."""


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


def prepare_run(config: TrainConfig, task: str, resume: bool, overwrite: bool) -> str | None:
    """Every check a run can make before minutes of decoding: the run folder, the options (the model's
    too), the device, the weights file. Returns the commit of the code the run starts with."""
    check_run_dir(Path(config.out), resume, overwrite)
    commit = source_commit()
    get_entry(config.model, task=task)
    config.check()
    accelerator_for(config.device)
    if not resume:
        check_weights_spec(config.weights)
    return commit


def check_training_share(config: TrainConfig, items: int, folder: Path) -> None:
    """Each process's share of ``items`` training items must fill a batch the model can train on (the
    last, smaller batch is dropped only where a share holds more than a batch)."""
    smallest = get_entry(config.model).min_batch_size
    share = math.ceil(items / (config.devices * config.num_nodes))
    if share < smallest:
        needs = f"model {config.model!r} trains on batches of {smallest} or more"
        raise UserError(f"{folder}: {items} training items, {share} per process; {needs}")


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
        (self.run_dir / RUN_JSON).unlink(missing_ok=True)  # run.json describes a finished run only
        remove_stale_temporaries(self.run_dir)
        for name, text in self.files.items():
            write_text_atomic(self.run_dir / name, text)


class _RunProvenance(Callback):
    """How the run was made, across resumes: kept in every checkpoint, so a resumed run (even after a kill)
    adds its own time to what last.ckpt recorded, and keeps the command that started it (a resume command
    alone, ``--out RUN --resume``, reproduces nothing) and every commit it trained at."""

    def __init__(self, command: str, commit: str | None) -> None:
        self.started, self.earlier = time.perf_counter(), 0.0
        self.command, self.commits = command, [commit] if commit else []

    def session_s(self) -> float:
        return time.perf_counter() - self.started

    def total_s(self) -> float:
        return self.earlier + self.session_s()

    def commit(self) -> str | None:
        return "+".join(self.commits) or None

    def state_dict(self) -> dict:
        return {"wall_s": self.total_s(), "command": self.command, "commits": self.commits}

    def load_state_dict(self, state_dict: dict) -> None:
        self.earlier = float(state_dict["wall_s"])
        self.command = state_dict.get("command", self.command)
        earlier = list(state_dict.get("commits", []))
        self.commits = earlier + [c for c in self.commits if c not in earlier]


class _CtrlC(Callback):
    """Tells Ctrl-C apart from other ends: Lightning answers it with a graceful shutdown and sys.exit(1)."""

    def __init__(self) -> None:
        self.pressed = False

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.pressed = isinstance(exception, KeyboardInterrupt)


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


def device_name(accelerator: str) -> str:
    """What a run reports it ran on: the GPU's name, or ``cpu``."""
    return torch.cuda.get_device_name() if accelerator == "gpu" else "cpu"


def precision_for(config: TrainConfig, accelerator: str) -> str:
    if config.precision != "auto":
        return config.precision
    return "bf16-mixed" if accelerator == "gpu" else "32-true"


def optimise_for_device(task: L.LightningModule, config: TrainConfig, accelerator: str) -> None:
    """On a GPU: TF32 matmuls. Channels-last weights where :func:`runs_channels_last` says (every model on
    a GPU). ``config.compile``: torch.compile the model in place (its state-dict keys are unchanged, so
    checkpoints load with or without it)."""
    if accelerator == "gpu":
        torch.set_float32_matmul_precision("high")
    if runs_channels_last(task.hparams.model, on_gpu=accelerator == "gpu"):
        task.model.to(memory_format=torch.channels_last)
    if config.compile:
        task.model.compile()


def out_of_memory_message(batch_size: int, min_batch_size: int = 1) -> str:
    if batch_size > min_batch_size:
        return f"out of GPU memory at batch size {batch_size}; try --batch-size {max(min_batch_size, batch_size // 2)}"
    return f"out of GPU memory even at batch size {batch_size}; try smaller images or a smaller model"


def fit(
    task: L.LightningModule,
    config: TrainConfig,
    data: L.LightningDataModule,
    monitor: str,
    metric_columns: list[str],
    resume: bool,
    command: str,
    commit: str | None,
    callbacks: Sequence[Callback] = (),
) -> RunSummary:
    """Train ``task`` into ``config.out``, keeping best/last checkpoints, metrics.csv and config.yaml, and at
    the end run.json (``command``, the command line that started the run, ``commit``, time, device).

    ``data`` serves its loaders with the samplers of :mod:`dlcv.training.sampling` (training a
    function of (seed, epoch); validation unpadded under DDP). best.ckpt holds weights only;
    resuming reads last.ckpt.
    """
    run_dir = Path(config.out)
    make_folder(run_dir)
    accelerator = accelerator_for(config.device)
    optimise_for_device(task, config, accelerator)
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
    provenance, ctrl_c = _RunProvenance(command, commit), _CtrlC()
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
                provenance,
                ctrl_c,
            ],
            plugins=[AtomicCheckpointIO(weights_only=[BEST])],
            logger=False,
            default_root_dir=run_dir,
            num_sanity_val_steps=0,
            log_every_n_steps=10,
        )
    except (MisconfigurationException, ValueError) as exc:  # the user's devices, nodes or precision
        raise UserError(f"--device/--devices/--num-nodes/--precision: {str(exc).splitlines()[0]}") from None
    sigint_handler = signal.getsignal(signal.SIGINT)
    with warnings.catch_warnings():
        # The run folder holds config.yaml by design; validation scores come from confusion matrices
        # already summed across processes, so Lightning's advice to average them is beside the point.
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")
        warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")
        # Batches are index tensors, or validation items already in memory: workers would have nothing to do.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        try:
            trainer.fit(task, datamodule=data, ckpt_path=str(run_dir / LAST) if resume else None)
        except SystemExit:
            if not ctrl_c.pressed:
                raise
            signal.signal(signal.SIGINT, sigint_handler)  # Lightning ignores Ctrl-C from then on
            raise TrainingInterrupted(f"{run_dir / LAST} holds the last finished epoch; --resume continues") from None
        except torch.cuda.OutOfMemoryError:
            raise UserError(out_of_memory_message(config.batch_size, get_entry(config.model).min_batch_size)) from None
        except RuntimeError as exc:
            if config.deterministic and "deterministic implementation" in str(exc):
                operation = str(exc).split(",")[0]
                raise UserError(f"--deterministic: {operation} on this device; train without it") from None
            raise
    summary = RunSummary(
        run_dir=run_dir,
        monitor=monitor,
        best_score=float(best.best_model_score) if best.best_model_score is not None else None,
        best_checkpoint=run_dir / BEST,
        epochs=trainer.current_epoch,
        wall_s=provenance.session_s(),
        is_global_zero=trainer.is_global_zero,
    )
    if trainer.is_global_zero:
        write_run_record(
            run_dir,
            task=get_entry(config.model).task,
            command=provenance.command,
            commit=provenance.commit(),
            wall_s=provenance.total_s(),
            epochs=summary.epochs,
            device=device_name(accelerator),
            monitor=monitor,
            best_score=summary.best_score,
        )
    return summary

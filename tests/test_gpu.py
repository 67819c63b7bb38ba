"""What only a CUDA GPU runs, end to end (skipped without one).

Training there takes the GPU's own path: bf16 autocast (``--precision auto``), channels-last weights,
the training set held in GPU memory and augmented there, and with ``--compile`` inductor's GPU
kernels. Prediction there (bf16, channels-last) must agree with the CPU's fp32 on the same weights.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from dlcv.predict import inference_on, iter_logits, load_task, segment_probabilities
from tests.conftest import TINY_SEGMENT, run_checkpoint_cli, run_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
GPU = "cuda"


def check_run(run: Path) -> None:
    """The run finished on the GPU, named in run.json, with finite losses every epoch."""
    record = json.loads((run / "run.json").read_text())
    assert record["device"] == (torch.cuda.get_device_name() if GPU == "cuda" else "cpu")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == record["epochs"] and all(math.isfinite(float(row["train_loss"])) for row in rows)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_segmentation_trains_on_the_gpu_and_predicts_as_the_cpu_does(
    compiled, landcover_dir, tiny_segment_config, tmp_path, capsys
):
    run = tmp_path / "run"
    argv = ["segment", "train", "--data", landcover_dir, "--model", "fcn8s", "--out", run, "--epochs", "2"]
    argv += ["--batch-size", "4", "--lr", "1e-3", "--config", tiny_segment_config, "--device", GPU]
    status, _, err = run_cli(capsys, *argv, *(["--compile"] if compiled else []))
    assert status == 0, err
    check_run(run)

    task = load_task(run / "best.ckpt", "segment")
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    probabilities = {}
    for device in ("cpu", GPU):
        with inference_on(task, torch.device(device)):
            probabilities[device] = segment_probabilities(task, images.to(device), (40, 40), "flips").float().cpu()
    assert (probabilities["cpu"] - probabilities[GPU]).abs().max() < 0.05  # bf16 against fp32

    masks = tmp_path / "masks"
    status, _, err = run_checkpoint_cli(
        capsys, "segment", "predict", run / "best.ckpt", landcover_dir / "validation", masks, "--device", GPU
    )
    assert status == 0, err
    assert len(list(masks.glob("*_mask.png"))) == 4


def test_classification_trains_on_the_gpu_and_scores_as_the_cpu_does(classification_dir, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["classify", "train", "--data", classification_dir, "--model", "resnet20_cifar", "--out", run]
    argv += ["--epochs", "2", "--batch-size", "8", "--workers", "0", "--device", GPU, "--ema", "0.9"]
    status, _, err = run_cli(capsys, *argv)
    assert status == 0, err
    check_run(run)

    task = load_task(run / "best.ckpt", "classify")
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cpu, gpu = (torch.cat([s.float().cpu() for s in iter_logits(task, images, torch.device(d))]) for d in ("cpu", GPU))
    assert (cpu - gpu).abs().max() < 0.05 * cpu.abs().max()  # bf16 against fp32


@pytest.fixture
def steps_never_wait_for_the_gpu(monkeypatch):
    """Training steps 2 to 5 of the first epoch, with every hook around them and the batches fetched and
    augmented meanwhile, raise on any operation that makes the host wait for the GPU: with none, the host
    prepares the next step while the GPU runs this one."""
    from dlcv.training import runner

    class Fenced(runner.FiniteLossGuard):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
            fenced = trainer.current_epoch == 0 and 2 <= batch_idx < 6
            torch.cuda.set_sync_debug_mode("error" if fenced else "default")

    monkeypatch.setattr(runner, "FiniteLossGuard", Fenced)
    yield
    torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("task", ["segment", "classify"])
def test_training_steps_never_wait_for_the_gpu(
    task, steps_never_wait_for_the_gpu, landcover_dir, classification_dir, tmp_path, capsys
):
    run = tmp_path / "run"
    if task == "segment":  # 12 steps an epoch; multi-scale crops and the Lovasz loss
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({**TINY_SEGMENT, "scale_range": [0.75, 1.5], "crop_size": 24}))
        argv = ["--data", landcover_dir, "--model", "fcn8s", "--config", config, "--batch-size", "1"]
        argv += ["--loss", "ce+lovasz"]
    else:  # 8 steps an epoch; the strong recipe's augmentation and weight EMA
        argv = ["--data", classification_dir, "--model", "resnet20_cifar", "--batch-size", "4", "--workers", "0"]
        argv += ["--policy", "trivialaugment", "--mixup", "0.2", "--cutmix", "1.0", "--ema", "0.99"]
    status, _, err = run_cli(capsys, task, "train", *argv, "--out", run, "--epochs", "1", "--device", GPU)
    assert status == 0, err
    check_run(run)

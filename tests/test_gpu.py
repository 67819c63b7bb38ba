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

from dlcv.predict import inference_on, iter_logits, load_task, segment_probabilities
from tests.conftest import run_checkpoint_cli, run_cli

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

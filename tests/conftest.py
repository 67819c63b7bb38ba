"""Shared fixtures: generated data always, the course data when ../shared/hw2_data is beside the repo."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

#: Devices for tests of what runs on the training device: the CPU always, a CUDA GPU where there is one.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]
REAL_DATA = Path(os.environ.get("DLCV_HW2_DATA", Path(__file__).resolve().parents[2] / "shared" / "hw2_data"))
HED_WEIGHTS = REAL_DATA.parent / "weights" / "vgg16_features_hed.safetensors"
#: Options that make an FCN train on generated land cover in seconds on the CPU: narrow fc6/fc7, 32 px, no snapshots.
TINY_SEGMENT = {
    "model_kwargs": {"fc_channels": 16},
    "workers": 0,
    "device": "cpu",
    "image_size": 32,
    "snapshot_ids": [],
}


@pytest.fixture(scope="session")
def landcover_dir(tmp_path_factory) -> Path:
    from dlcv.data.synthetic import make_landcover_set

    return make_landcover_set(tmp_path_factory.mktemp("landcover"), train=12, validation=4, size=40, seed=1)


@pytest.fixture(scope="session")
def tiny_segment_config(tmp_path_factory) -> Path:
    """TINY_SEGMENT as a ``--config`` file, for the tests that train segmentation runs of their own."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SEGMENT))
    return path


@pytest.fixture(scope="session")
def classification_dir(tmp_path_factory) -> Path:
    """Generated course layout: train_50/ (4 classes x 8), val_50/ (4 x 3) and val_gt.csv, 16 x 16 images."""
    from dlcv.data.synthetic import make_classification_set

    root = tmp_path_factory.mktemp("classification")
    return make_classification_set(root, classes=4, per_class=8, size=16, seed=2, val_per_class=3)


@pytest.fixture(scope="session")
def real_p1() -> Path:
    folder = REAL_DATA / "p1_data"
    if not folder.is_dir():
        pytest.skip("course data ../shared/hw2_data not present")
    return folder


@pytest.fixture(scope="session")
def real_p2() -> Path:
    folder = REAL_DATA / "p2_data"
    if not folder.is_dir():
        pytest.skip("course data ../shared/hw2_data not present")
    return folder


@pytest.fixture(scope="session")
def hed_weights() -> Path:
    if not HED_WEIGHTS.is_file():
        pytest.skip("../shared/weights/vgg16_features_hed.safetensors not present")
    return HED_WEIGHTS


@contextmanager
def no_host_sync(device: str) -> Iterator[None]:
    """On a CUDA device, any operation inside that makes the host wait for the GPU (a value read back, a
    blocking copy) raises; elsewhere nothing changes."""
    if device != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Run ``dlcv argv`` in this process; returns (exit status, stdout, stderr)."""
    from dlcv.cli import main

    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_checkpoint_cli(
    capsys: pytest.CaptureFixture[str],
    task: str,
    command: str,
    checkpoint: str | Path,
    source: str | Path,
    output: str | Path,
    *extra: str | Path,
) -> tuple[int, str, str]:
    """Run ``dlcv TASK COMMAND --checkpoint C --input S --output O EXTRA``: the flags every predict and tsne takes."""
    return run_cli(capsys, task, command, "--checkpoint", checkpoint, "--input", source, "--output", output, *extra)

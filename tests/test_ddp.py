"""Data-parallel training: each process its share, and validation scores exact across processes.

Two processes on the CPU (gloo) must give the same validation scores as one on the same weights:
the confusion matrix is summed across processes and no validation item is counted twice.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import run_cli

#: A training epoch at learning rate 0 leaves the weights as loaded: validation then scores those weights.
FROZEN = ["--epochs", "1", "--lr", "0", "--batch-size", "2"]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def validation_columns(run: Path) -> dict[str, str]:
    """The validation scores of the run's one epoch, as written (so compared to the last digit)."""
    (row,) = rows(run / "metrics.csv")
    return {key: value for key, value in row.items() if key.startswith("val_")}


def two_processes(capsys, *argv) -> None:
    """``dlcv argv --devices 2`` in a fresh interpreter: Lightning's DDP launcher re-runs the command."""
    command = [sys.executable, "-m", "dlcv", *map(str, argv), "--devices", "2", "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [line for line in done.stdout.splitlines() if line.startswith("best ")]
    assert len(summaries) == 1, done.stdout[-2000:]  # only rank 0 reports


def fake_trainer(world_size: int, global_rank: int) -> SimpleNamespace:
    return SimpleNamespace(world_size=world_size, global_rank=global_rank)


def test_training_shares_cover_one_permutation_of_seed_and_epoch():
    from dlcv.training.sampling import EpochOrder, training_loader

    def shares(epoch: int, seed: int = 7) -> list[list[int]]:
        return [list(EpochOrder(range(11), 3, rank, seed, epoch=epoch)) for rank in range(3)]

    first = shares(epoch=4)
    assert [len(share) for share in first] == [4, 4, 4]  # padded: every process takes as many steps
    merged = [i for share in first for i in share]
    assert len(merged) == 12 and set(merged) == set(range(11))  # one item twice, wrapping around
    assert shares(epoch=4) == first and shares(epoch=5) != first and shares(epoch=4, seed=8) != first

    loader = training_loader(list(range(10)), fake_trainer(1, 0), seed=7, batch_size=4, epoch=2)
    order = list(loader.sampler)
    assert sorted(order) == list(range(10)) and order == list(loader.sampler)
    assert len(list(loader)) == 2  # drop_last: 10 items make two full batches of 4


def test_validation_shares_count_every_item_once():
    from dlcv.errors import UserError
    from dlcv.training.sampling import validation_loader

    shares = [list(validation_loader(list(range(7)), fake_trainer(3, r), batch_size=2).sampler) for r in range(3)]
    assert sorted(i for share in shares for i in share) == list(range(7))
    for items, count in (([0, 1], "2 items"), ([0], "1 item")):
        with pytest.raises(UserError, match=f"the validation set has {count}, fewer than the 3 processes"):
            validation_loader(items, fake_trainer(3, 0), batch_size=1)


def test_devices_and_nodes_reach_lightning(landcover_dir, tmp_path, capsys, monkeypatch):
    import lightning as L

    seen = {}

    class Stop(Exception):
        pass

    def trainer(**options):
        seen.update(options)
        raise Stop

    monkeypatch.setattr(L, "Trainer", trainer)
    argv = ["--data", landcover_dir, "--out", tmp_path / "run", "--model", "fcn32s", "--device", "cpu"]
    with pytest.raises(Stop):
        run_cli(capsys, "segment", "train", *argv, "--devices", "4", "--num-nodes", "3", "--deterministic")
    assert (seen["devices"], seen["num_nodes"], seen["strategy"], seen["deterministic"]) == (4, 3, "ddp", True)


@pytest.fixture(scope="module")
def segmentation_weights(tmp_path_factory) -> Path:
    """FCN-8s weights whose predictions vary within and across images (random skip scorers)."""
    from dlcv.models import build_model

    torch.manual_seed(5)
    model = build_model("fcn8s", 7, fc_channels=16)
    with torch.no_grad():
        for layer in (model.score_pool3, model.score_pool4):
            layer.weight.normal_(0, 0.05)
            layer.bias.normal_(0, 1.0)
    path = tmp_path_factory.mktemp("weights") / "fcn8s.pth"
    torch.save(model.state_dict(), path)
    return path


def test_segmentation_validation_is_exact_on_two_processes(segmentation_weights, tmp_path, capsys):
    from dlcv.data.images import read_rgb
    from dlcv.data.palette import NUM_CLASSES, decode_mask
    from dlcv.data.synthetic import make_landcover_set
    from dlcv.metrics import confusion_matrix, iou_per_class

    data = make_landcover_set(tmp_path / "data", train=4, validation=5, size=40, seed=3)  # 5: uneven shares
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model_kwargs": {"fc_channels": 16}, "workers": 0, "image_size": 32}))
    argv = ["segment", "train", "--data", data, "--model", "fcn8s", "--weights", segmentation_weights]
    argv += ["--config", config, "--limit-train", "2", *FROZEN]

    status, _, err = run_cli(capsys, *argv, "--out", tmp_path / "one", "--device", "cpu")
    assert status == 0, err
    two_processes(capsys, *argv, "--out", tmp_path / "two")
    one, two = validation_columns(tmp_path / "one"), validation_columns(tmp_path / "two")
    assert one == two

    # The graders' evaluator on the same weights' predicted masks agrees ...
    masks = tmp_path / "masks"
    status, _, err = run_cli(
        capsys, "segment", "predict", "--checkpoint", tmp_path / "one" / "best.ckpt", "--input",
        data / "validation", "--output", masks, "--device", "cpu",
    )  # fmt: skip
    assert status == 0, err
    truths = sorted((data / "validation").glob("*_mask.png"))
    confusions = [
        confusion_matrix(decode_mask(read_rgb(t)), decode_mask(read_rgb(masks / t.name)), NUM_CLASSES) for t in truths
    ]
    iou = iou_per_class(sum(confusions))
    assert float(two["val_miou"]) == pytest.approx(np.nanmean(iou), abs=1e-6)
    assert len({round(float(two[key]), 6) for key in two if key.startswith("val_iou_")}) > 1  # not one class
    # ... and counting the first image twice (a padded DistributedSampler) would not.
    assert np.nanmean(iou_per_class(sum(confusions) + confusions[0])) != pytest.approx(float(two["val_miou"]))


def test_classification_validation_is_exact_on_two_processes(tmp_path, capsys):
    from dlcv.data.synthetic import make_classification_set

    data = make_classification_set(tmp_path / "data", classes=3, per_class=8, size=16, seed=2, val_per_class=3)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"workers": 0}))
    common = ["--data", data, "--model", "resnet20_cifar", "--config", config, "--device", "cpu"]
    status, _, err = run_cli(
        capsys, "classify", "train", *common, "--out", tmp_path / "trained", "--epochs", "3", "--lr", "0.05",
        "--batch-size", "8",
    )  # fmt: skip
    assert status == 0, err
    state = torch.load(tmp_path / "trained" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    weights = tmp_path / "resnet.pth"
    torch.save({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}, weights)

    # One training step on one image (the same image, the same augmentation on rank 0): batch-norm
    # statistics move alike, and DDP gives every process rank 0's before validating.
    argv = ["classify", "train", *common, "--weights", weights, "--limit-train", "1", *FROZEN]
    status, _, err = run_cli(capsys, *argv, "--out", tmp_path / "one")
    assert status == 0, err
    two_processes(capsys, *argv, "--out", tmp_path / "two")
    one, two = validation_columns(tmp_path / "one"), validation_columns(tmp_path / "two")
    assert one == two
    # 9 validation images over 2 processes: a padded sampler would count one twice, and an accuracy
    # strictly between 0 and 1 would move.
    assert 0 < float(two["val_acc"]) < 1

"""Test-time augmentation: views are undone exactly, and ``predict --tta`` keeps the graders' format.

The checkpoint comes from a tiny run with the stronger recipe (DeepLabv3+, ce+lovasz, class
weights, multi-scale crops), so these tests also cover that recipe's training end to end.
"""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from dlcv.data.palette import PALETTE
from dlcv.predict import TTA_SCALES, TTA_VIEWS, segment_probabilities
from dlcv.training.segmentation import SegmentationTask
from tests.conftest import run_checkpoint_cli, run_cli

RECIPE = {
    "model": "deeplabv3plus_vgg16",
    "loss": "ce+lovasz",
    "class_weights": {"rangeland": 2.0},
    "scale_range": [0.75, 1.5],
    "crop_size": 32,
    "workers": 0,
    "device": "cpu",
    "epochs": 2,
    "batch_size": 4,
    "optimizer": "adamw",
    "lr": 1e-3,
}


def task_with(model: nn.Module) -> SegmentationTask:
    task = SegmentationTask("fcn32s", 7, model_kwargs={"fc_channels": 8})
    task.model = model
    return task.eval()


def pointwise_task() -> SegmentationTask:
    torch.manual_seed(0)
    return task_with(nn.Conv2d(3, 7, 1))


@pytest.mark.parametrize("views", ["flips", "d4"])
@pytest.mark.parametrize("size", [(24, 40), (48, 80)])
def test_views_of_an_equivariant_model_change_nothing(views, size):
    """A pointwise model commutes with flips and turns, so every view, turned back, is the plain prediction."""
    task = pointwise_task()
    images = torch.randint(0, 256, (2, 3, 24, 40), dtype=torch.uint8)
    with torch.no_grad():
        plain = task.predict_logits(images, size).softmax(dim=1)
        averaged = segment_probabilities(task, images, size, views)
    assert averaged.shape == (2, 7, *size)
    assert torch.allclose(averaged, plain, atol=1e-6)


def test_flips_average_each_view_turned_back():
    torch.manual_seed(1)
    task = task_with(nn.Conv2d(3, 7, 3, padding=1))  # a 3x3 kernel: not flip-equivariant
    images = torch.randint(0, 256, (1, 3, 16, 20), dtype=torch.uint8)

    def probs(x: torch.Tensor) -> torch.Tensor:
        return task(x).softmax(dim=1)

    with torch.no_grad():
        expected = (
            probs(images)
            + probs(images.flip(-1)).flip(-1)
            + probs(images.flip(-2)).flip(-2)
            + probs(images.flip(-1, -2)).flip(-1, -2)
        ) / 4
        averaged = segment_probabilities(task, images, (16, 20), "flips")
    assert torch.allclose(averaged, expected, atol=1e-6)
    assert not torch.allclose(averaged, probs(images), atol=1e-3)


def test_scales_are_averaged_at_the_output_size():
    task = pointwise_task()
    images = torch.randint(0, 256, (2, 3, 20, 28), dtype=torch.uint8)
    with torch.no_grad():
        averaged = segment_probabilities(task, images, (40, 56), "d4", (0.75, 1.0, 1.25))
        flat = segment_probabilities(task, torch.full_like(images, 77), (40, 56), "d4", (0.5, 1.5))
        flat_plain = task.predict_logits(torch.full_like(images, 77), (40, 56)).softmax(dim=1)
    assert averaged.shape == (2, 7, 40, 56)
    assert torch.allclose(averaged.sum(dim=1), torch.ones(2, 40, 56), atol=1e-5)
    assert torch.allclose(flat, flat_plain, atol=1e-5)  # a flat image looks the same at any scale


def test_view_sets():
    assert len(TTA_VIEWS["flips"]) == 4 and len(set(TTA_VIEWS["d4"])) == 8
    x = torch.arange(12.0).view(1, 1, 3, 4)
    seen = {tuple(torch.rot90(x, t, dims=(-2, -1)).flip(-1).flatten().tolist()) for t, f in TTA_VIEWS["d4"] if f}
    seen |= {tuple(torch.rot90(x, t, dims=(-2, -1)).flatten().tolist()) for t, f in TTA_VIEWS["d4"] if not f}
    assert len(seen) == 8  # the eight symmetries of the square, all different


def test_help_names_the_default_views_and_scales(capsys):
    """The --tta help spells out the library's views and default scales; it must follow them."""
    with pytest.raises(SystemExit):
        run_cli(capsys, "segment", "predict", "--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join(name for name in TTA_VIEWS if name != "none") + "}" in help_text
    assert "at scales " + ", ".join(f"{scale:g}" for scale in TTA_SCALES) in help_text


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory, landcover_dir) -> Path:
    from dlcv.cli import main

    folder = tmp_path_factory.mktemp("recipe")
    config = folder / "recipe.yaml"
    config.write_text(yaml.safe_dump(RECIPE))
    run = folder / "run"
    assert main(["segment", "train", "--data", str(landcover_dir), "--out", str(run), "--config", str(config)]) == 0
    return run


def test_recipe_trains_and_keeps_its_options(recipe_run):
    rows = list(csv.DictReader((recipe_run / "metrics.csv").open()))
    assert len(rows) == 2 and all(np.isfinite(float(r["train_loss"])) for r in rows)
    saved = yaml.safe_load((recipe_run / "config.yaml").read_text())
    assert {k: saved[k] for k in RECIPE} == RECIPE
    hparams = torch.load(recipe_run / "best.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["loss"] == "ce+lovasz" and hparams["class_weights"] == [1, 1, 2, 1, 1, 1, 1]


def test_predict_with_tta_writes_the_same_format(recipe_run, landcover_dir, tmp_path, capsys):
    outputs = {}
    checkpoint, images = recipe_run / "best.ckpt", landcover_dir / "validation"
    for name, flags in (("plain", []), ("tta", ["--tta"]), ("d4", ["--tta", "d4", "--tta-scales", "1"])):
        out = tmp_path / name
        status, stdout, err = run_checkpoint_cli(
            capsys, "segment", "predict", checkpoint, images, out, "--device", "cpu", *flags
        )
        assert status == 0, err
        assert stdout == f"wrote 4 masks to {out}\n"
        outputs[name] = {p.name: np.asarray(Image.open(p)) for p in sorted(out.iterdir())}
    assert outputs["tta"].keys() == outputs["plain"].keys() == outputs["d4"].keys()
    palette = {tuple(c) for c in PALETTE}
    for masks in outputs.values():
        for mask in masks.values():
            assert mask.shape == (40, 40, 3) and {tuple(c) for c in mask.reshape(-1, 3)} <= palette


def test_bad_tta_scales_are_one_line_errors(recipe_run, landcover_dir, tmp_path, capsys):
    out = tmp_path / "masks"
    status, _, err = run_checkpoint_cli(
        capsys, "segment", "predict", recipe_run / "best.ckpt", landcover_dir / "validation", out, "--tta-scales", "0"
    )
    assert status == 2 and err.startswith("error: --tta-scales") and err.count("\n") == 1
    assert not out.exists()

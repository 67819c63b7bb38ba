"""Segmentation end to end through the CLI: train, predict, eval, viz; then on real pairs."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dlcv.data.palette import PALETTE
from tests.conftest import run_checkpoint_cli, run_cli

TINY = {"model_kwargs": {"fc_channels": 32}, "workers": 0, "device": "cpu", "image_size": 32}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "snapshot_ids": ["0000", "0002"]}))
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, landcover_dir, tiny_config) -> Path:
    from dlcv.cli import main

    run = tmp_path_factory.mktemp("runs") / "fcn16s"
    argv = ["segment", "train", "--data", landcover_dir, "--model", "fcn16s", "--out", run, "--epochs", "3"]
    argv += ["--batch-size", "4", "--lr", "1e-3", "--config", tiny_config, "--class-weights", "rangeland=1.5"]
    argv += ["--scale-range", "0.8", "1.25"]
    assert main([str(a) for a in argv]) == 0
    return run


def test_run_folder_holds_everything(trained_run):
    for name in ("best.ckpt", "last.ckpt", "metrics.csv", "config.yaml"):
        assert (trained_run / name).is_file(), name
    rows = list(csv.DictReader((trained_run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert {"train_loss", "val_miou", "val_iou_urban", "val_iou_barren"} <= set(rows[0])
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["model"] == "fcn16s" and config["epochs"] == 3 and config["image_size"] == 32
    assert config["model_kwargs"] == {"fc_channels": 32} and config["class_weights"] == {"rangeland": 1.5}
    assert config["scale_range"] == [0.8, 1.25]
    hyper_parameters = torch.load(trained_run / "best.ckpt", weights_only=True)["hyper_parameters"]
    assert hyper_parameters["class_weights"] == [1.0, 1.0, 1.5, 1.0, 1.0, 1.0, 1.0]  # the loss's, in class order
    # First, middle and last epoch (0, 1, 2), for each chosen id.
    snapshots = sorted(p.relative_to(trained_run).as_posix() for p in (trained_run / "snapshots").rglob("*.png"))
    assert snapshots == [f"snapshots/epoch_00{e}/{i}_mask.png" for e in range(3) for i in ("0000", "0002")]


def test_predict_eval_viz(trained_run, landcover_dir, tmp_path, capsys):
    out = tmp_path / "masks"
    status, stdout, err = run_checkpoint_cli(
        capsys, "segment", "predict", trained_run / "best.ckpt", landcover_dir / "validation", out, "--device", "cpu"
    )
    assert status == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:04d}_mask.png" for i in range(4)]
    for name in names:
        mask = np.asarray(Image.open(out / name))
        assert mask.shape == (40, 40, 3)  # the image's own size, though the model ran at 32
        assert {tuple(c) for c in mask.reshape(-1, 3)} <= {tuple(c) for c in PALETTE}
    status, stdout, _ = run_cli(capsys, "segment", "eval", "--pred", out, "--gt", landcover_dir / "validation")
    assert status == 0 and stdout.splitlines()[7].startswith("mean_iou: ")

    figures = tmp_path / "figures"
    status, stdout, err = run_cli(
        capsys,
        "segment",
        "viz",
        "--data",
        landcover_dir / "validation",
        "--pred",
        out,
        trained_run,
        "--ids",
        "0000",
        "0002",
        "--out",
        figures,
    )
    assert status == 0, err
    assert sorted(p.name for p in figures.iterdir()) == [
        "compare.png",
        "overlay_0000.png",
        "overlay_0002.png",
        f"progress_{trained_run.name}.png",
    ]


def test_viz_tells_apart_runs_whose_folders_share_a_name(trained_run, landcover_dir, tmp_path, capsys):
    from dlcv.viz.masks import prediction_folder

    copies = [tmp_path / parent / "run" for parent in ("first", "second")]
    for copy in copies:
        shutil.copytree(trained_run, copy)
    argv = ["segment", "viz", "--data", landcover_dir / "validation", "--pred", *copies, "--ids", "0002"]
    status, _, err = run_cli(capsys, *argv, "--out", tmp_path / "figures")
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "compare.png",
        "overlay_0002.png",
        "progress_first_run.png",
        "progress_second_run.png",
    ]
    assert prediction_folder(copies[0], "first/run")[0].startswith("first/run (epoch ")


def test_existing_run_is_not_overwritten(trained_run, landcover_dir, capsys):
    before = (trained_run / "metrics.csv").read_text()
    status, _, err = run_cli(capsys, "segment", "train", "--data", landcover_dir, "--out", trained_run, "--epochs", "1")
    assert status == 2 and "already holds a run" in err and err.count("\n") == 1
    assert (trained_run / "metrics.csv").read_text() == before


def test_resume_extends_the_run(trained_run, tmp_path, capsys):
    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    status, _, err = run_cli(capsys, "segment", "train", "--out", run, "--resume", "--epochs", "4")
    assert status == 0, err
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert rows[:3] == list(csv.DictReader((trained_run / "metrics.csv").open()))


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["--data", "{tmp}/nowhere"], "nowhere"),
        (["--data", "{tmp}"], "train"),
        (["--data", "{data}", "--model", "resnet999"], "resnet999"),
        (["--data", "{data}", "--weights", "{tmp}/missing.pth"], "missing.pth"),
        (["--data", "{data}", "--class-weights", "rangeland=heavy"], "rangeland=heavy"),
        (["--data", "{data}", "--class-weights", "cloud=2"], "cloud"),
        (["--data", "{data}", "--class-weights", "1", "2"], "give 7 numbers"),
        (["--data", "{data}", "--scale-range", "1.5", "0.75"], "--scale-range: scale_range must be"),
        (["--data", "{data}", "--image-size", "0"], "--image-size: image_size must be a positive integer"),
        (["--data", "{data}", "--model", "deeplabv3plus_vgg16", "--batch-size", "1"], "--batch-size: batch_size 1"),
        (["--data", "{data}", "--model", "unet_vgg16"], "model_kwargs {'fc_channels': 32}: model 'unet_vgg16' refuses"),
        (["--data", "{tmp}/nowhere", "--weights", "{tmp}/missing.pth"], "missing.pth: no such weights file"),
        pytest.param(
            ["--data", "{data}", "--device", "cuda"],
            "--device cuda: no CUDA GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible"),
        ),
    ],
)
def test_train_user_errors(argv, culprit, tmp_path, landcover_dir, tiny_config, capsys):
    argv = [a.format(tmp=tmp_path, data=landcover_dir) for a in argv]
    status, _, err = run_cli(capsys, "segment", "train", "--out", tmp_path / "run", "--config", tiny_config, *argv)
    assert status == 2 and err.startswith("error: ") and culprit in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_training_set_too_small_for_the_models_batches_is_one_error(tmp_path, landcover_dir, capsys):
    config = tmp_path / "deeplab.yaml"
    config.write_text(yaml.safe_dump({"model": "deeplabv3plus_vgg16", "workers": 0, "device": "cpu", "image_size": 32}))
    argv = ["segment", "train", "--data", landcover_dir, "--config", config, "--out", tmp_path / "run"]
    status, _, err = run_cli(capsys, *argv, "--limit-train", "1")
    message = "1 training items, 1 per process; model 'deeplabv3plus_vgg16' trains on batches of 2 or more"
    assert status == 2 and err == f"error: {landcover_dir / 'train'}: {message}\n"
    assert not (tmp_path / "run").exists()


def test_predict_user_errors(tmp_path, trained_run, capsys):
    status, _, err = run_checkpoint_cli(capsys, "segment", "predict", tmp_path / "x.ckpt", tmp_path, tmp_path / "out")
    assert (status == 2 and "no images" in err) or "x.ckpt" in err
    (tmp_path / "a_sat.jpg").write_bytes(b"\xff\xd8 truncated")
    status, _, err = run_checkpoint_cli(
        capsys, "segment", "predict", trained_run / "best.ckpt", tmp_path, tmp_path / "out", "--device", "cpu"
    )
    assert status == 2 and "a_sat.jpg" in err
    assert not (tmp_path / "out").exists()  # nothing half-written
    (tmp_path / "a_sat.jpg").unlink()
    for name in ("b.png", "b.jpg"):  # both would be predicted into b_mask.png
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    status, _, err = run_checkpoint_cli(
        capsys, "segment", "predict", trained_run / "best.ckpt", tmp_path, tmp_path / "out", "--device", "cpu"
    )
    assert status == 2 and err == f"error: {tmp_path / 'b.png'}: its mask would be b_mask.png, as would b.jpg's\n"
    assert not (tmp_path / "out").exists()


def test_predict_refuses_to_write_over_its_input(trained_run, landcover_dir, tmp_path, capsys):
    gt = tmp_path / "validation"
    shutil.copytree(landcover_dir / "validation", gt)
    before = {path.name: path.read_bytes() for path in gt.iterdir()}
    status, _, err = run_checkpoint_cli(capsys, "segment", "predict", trained_run / "best.ckpt", gt, gt / ".")
    message = "the input folder, whose masks predict would overwrite: 0000_mask.png, 0001_mask.png, 0002_mask.png"
    assert status == 2 and err == f"error: {gt / '.'}: {message}, 0003_mask.png\n"
    assert {path.name: path.read_bytes() for path in gt.iterdir()} == before
    for mask in gt.glob("*_mask.png"):  # a folder of images alone takes their masks
        mask.unlink()
    status, _, err = run_checkpoint_cli(
        capsys, "segment", "predict", trained_run / "best.ckpt", gt, gt, "--device", "cpu"
    )
    assert status == 0, err
    assert sorted(path.name for path in gt.glob("*_mask.png")) == [f"{i:04d}_mask.png" for i in range(4)]


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "predict", "--checkpoint", "c.ckpt", "--input", ".", "--output", "o", "--batch-size", "0"],
        ["classify", "predict", "--checkpoint", "c.ckpt", "--input", ".", "--output", "o.csv", "--batch-size", "-1"],
        ["segment", "eval", "--pred", ".", "--gt", ".", "--workers", "many"],
        ["describe", "fcn8s", "--classes", "0"],
    ],
)
def test_a_count_below_one_is_a_usage_error(argv, capsys):
    status, out, err = run_cli(capsys, *argv)
    flag, value = argv[-2:]
    assert status == 2 and out == "" and err.endswith(f"argument {flag}: {value!r}: not a positive integer\n")


def test_version_and_description_are_the_installed_ones_and_a_missing_command_is_a_usage_error(capsys):
    from importlib.metadata import metadata

    installed = metadata("dlcv")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, "--version")
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"dlcv {installed['Version']}\n"
    with pytest.raises(SystemExit):
        run_cli(capsys, "--help")
    assert installed["Summary"] in " ".join(capsys.readouterr().out.split())
    for group in ([], ["segment"], ["classify"], ["results"]):
        status, out, err = run_cli(capsys, *group)
        prog = " ".join(["dlcv", *group])
        assert (status, out, err) == (2, "", f"error: {prog}: the following arguments are required: COMMAND\n")


def test_real_pairs_train_predict_eval(real_p2, hed_weights, tmp_path, capsys):
    """A few real pairs, the HED weights, one epoch at 64 px: the whole path on the course data."""
    data = tmp_path / "p2"
    for split, ids in (("train", ["0000", "0001", "0002", "0003"]), ("validation", ["0010", "0097", "0107"])):
        (data / split).mkdir(parents=True)
        for i in ids:
            for suffix in ("_sat.jpg", "_mask.png"):
                shutil.copy(real_p2 / split / f"{i}{suffix}", data / split)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "image_size": 64}))
    run = tmp_path / "run"
    argv = ["--data", data, "--model", "fcn8s", "--out", run, "--epochs", "1", "--batch-size", "2"]
    status, out, err = run_cli(capsys, "segment", "train", *argv, "--weights", hed_weights, "--config", config)
    assert status == 0, err
    assert "loaded 26 tensors" in err
    assert sorted(p.name for p in (run / "snapshots" / "epoch_000").iterdir()) == [
        "0010_mask.png",
        "0097_mask.png",
        "0107_mask.png",
    ]
    masks = tmp_path / "masks"
    status, _, err = run_checkpoint_cli(
        capsys, "segment", "predict", run / "last.ckpt", data / "validation", masks, "--device", "cpu"
    )
    assert status == 0, err
    assert np.asarray(Image.open(masks / "0097_mask.png")).shape == (512, 512, 3)
    status, out, _ = run_cli(capsys, "segment", "eval", "--pred", masks, "--gt", data / "validation")
    assert status == 0 and out.splitlines()[7].startswith("mean_iou: ") and out.endswith("\n\n")

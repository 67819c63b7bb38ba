"""What a finished run folder holds besides its metrics: run.json (how the run was made), published as a
row by `dlcv results publish`; and best.ckpt, the weights alone, that predict exactly as the full checkpoint."""

from __future__ import annotations

import csv
import datetime
import json
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from dlcv.results import COLUMNS, Result, read_results, run_result, source_commit, today
from tests.conftest import run_cli

TINY = {"workers": 0, "device": "cpu"}


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_tensors(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """One epoch of a tiny FCN-32s, started as the command line ``dlcv ARGV`` would; (run folder, ARGV)."""
    from dlcv.cli import main
    from dlcv.data.synthetic import make_landcover_set

    root = tmp_path_factory.mktemp("segment")
    data = make_landcover_set(root / "data", train=4, validation=3, size=32, seed=5)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "model_kwargs": {"fc_channels": 16}, "snapshot_ids": []}))
    argv = ["segment", "train", "--data", str(data), "--config", str(config), "--out", str(root / "run")]
    argv += ["--model", "fcn32s", "--epochs", "1", "--batch-size", "2"]
    started_at = git_commit()

    def moving_checkout() -> str | None:
        """The checkout moves on once the run folder exists (the data decoded): run.json must keep the start's."""
        return "moved-on" if (root / "run").exists() else started_at

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("dlcv.training.runner.source_commit", moving_checkout)
        assert main(argv) == 0
    return root / "run", argv


def git_commit() -> str | None:
    """What the checkout holding dlcv is at, asked of git directly."""
    root = Path(__file__).resolve().parents[1]

    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", root, *argv], capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if git("status", "--porcelain", "--", "src") else commit


def test_run_json_records_how_the_run_was_made(segment_run):
    run, argv = segment_run
    record = json.loads((run / "run.json").read_text())
    with (run / "metrics.csv").open(newline="") as handle:
        best = max(float(row["val_miou"]) for row in csv.DictReader(handle))
    assert record.pop("wall_s") > 0
    assert record == {
        "task": "segment",
        "command": shlex.join(["dlcv", *argv]),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
        "epochs": 1,
        "device": "cpu",
        "monitor": "val_miou",
        "best_score": pytest.approx(best),
    }


def test_no_git_no_commit(monkeypatch):
    def git_missing(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", git_missing)
    assert source_commit() is None
    # A copy of the checkout without git (a lent GPU machine's) is told its commit.
    monkeypatch.setenv("DLCV_SOURCE_COMMIT", "abc1234")
    assert source_commit() == "abc1234"


def test_publish_takes_a_run_folder(segment_run, tmp_path, capsys):
    run, argv = segment_run
    record = json.loads((run / "run.json").read_text())
    docs = tmp_path / "docs"
    for expected in ("1 row", "0 rows"):  # the same run twice is one row
        status, out, err = run_cli(capsys, "results", "publish", run, "--docs", docs)
        assert status == 0 and f"added {expected} to" in out, err
    with (docs / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS
    assert rows == [
        {
            "task": "segment",
            "model": "fcn32s",
            "weights": "none",
            "split": "validation",
            "metric": "miou",
            "value": str(round(record["best_score"], 6)),
            "epochs": "1",
            "wall_s": str(record["wall_s"]),
            "device": "cpu",
            "command": shlex.join(["dlcv", *argv]),
            "commit": record["commit"] or "unknown",
            "date": record["date"],
        }
    ]
    assert "| fcn32s | none | validation |" in (docs / "RESULTS.md").read_text()


def write_run(folder: Path, weights: str, commit: str | None) -> Path:
    """A classification run folder as fit() leaves it, written by hand."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"model": "vgg16_bn", "weights": weights, "epochs": 3}))
    record = {"task": "classify", "command": "dlcv classify train --out R", "commit": commit, "date": "2026-01-02"}
    record |= {"wall_s": 12.5, "epochs": 3, "device": "NVIDIA H100", "monitor": "val_acc", "best_score": 0.7416}
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def test_a_run_row_names_the_weights_file_and_an_unknown_commit(tmp_path):
    run = write_run(tmp_path / "run", "/data/weights/vgg16_features_hed.safetensors", commit=None)
    assert run_result(run) == Result(
        "classify",
        "vgg16_bn",
        "vgg16_features_hed.safetensors",
        "validation",
        "accuracy",
        0.7416,
        3,
        12.5,
        "NVIDIA H100",
        "dlcv classify train --out R",
        "unknown",
        "2026-01-02",
    )


def test_publish_refuses_a_folder_without_run_json(tmp_path, capsys):
    run = write_run(tmp_path / "run", "imagenet", commit="abc1234")
    (run / "run.json").unlink()  # e.g. a run still training, or stopped
    status, _, err = run_cli(capsys, "results", "publish", run, "--docs", tmp_path / "docs")
    assert status == 2 and err == f"error: {run}: not a finished run folder (no run.json)\n"
    assert not (tmp_path / "docs").exists()


def test_predict_scores_its_masks_and_writes_a_row_that_publish_takes(segment_run, tmp_path, capsys, monkeypatch):
    """``predict --gt`` prints what ``eval`` prints of the same masks; ``--results`` keeps that score as a row:
    the run's model, weights, epochs and training time, beside the predict command, the split, its device, and
    the commit and date as predicting started."""
    run, _ = segment_run
    data = Path(yaml.safe_load((run / "config.yaml").read_text())["data"]) / "validation"
    masks, row_csv = tmp_path / "masks", tmp_path / "tta.csv"
    argv = ["segment", "predict", "--checkpoint", str(run / "best.ckpt"), "--input", str(data)]
    argv += ["--output", str(masks), "--device", "cpu", "--tta", "--gt", str(data), "--results", str(row_csv)]
    argv += ["--split", "held-out"]

    def moving_checkout() -> str:
        """The checkout moves on once the masks are written: the row must keep the one that predicted them."""
        return "moved-on" if masks.exists() else "feed123"

    monkeypatch.setattr("dlcv.results.source_commit", moving_checkout)
    status, out, err = run_cli(capsys, *argv)
    assert status == 0, err
    status, scored, err = run_cli(capsys, "segment", "eval", "--pred", masks, "--gt", data)
    assert status == 0, err
    assert out == f"wrote 3 masks to {masks}\n{scored}wrote the score's row to {row_csv}\n"

    status, as_json, _ = run_cli(capsys, "segment", "eval", "--pred", masks, "--gt", data, "--json")
    miou = round(json.loads(as_json)["mean_iou"], 6)
    trained, command = run_result(run), shlex.join(["dlcv", *argv])
    assert trained.commit != "feed123"
    predicted = replace(trained, split="held-out", value=miou, command=command, commit="feed123", date=today())
    assert read_results(row_csv) == [predicted]
    docs = tmp_path / "docs"
    status, out, err = run_cli(capsys, "results", "publish", row_csv, run, "--docs", docs)
    assert status == 0 and "added 2 rows" in out, err


@pytest.mark.parametrize(
    "scoring, message",
    [
        (["--results", "row.csv"], "error: --results needs --gt, the ground truth to score against\n"),
        (["--gt", "{tmp}/nope"], "error: {tmp}/nope: no such file or folder\n"),
        (["--gt", "{tmp}/best.ckpt"], "error: {tmp}/best.ckpt: not a folder\n"),
        (["--gt", "{tmp}"], "error: {tmp}: no ground-truth masks (.png) in this folder\n"),
        (
            ["--gt", "{data}/../train"],  # another split: its 0003 has no image here
            "error: {data}/../train: no image in {data} for 1 ground-truth mask: 0003_mask.png\n",
        ),
        (["--gt", "{data}", "--results", "{tmp}"], "error: {tmp}: a folder, where a file is to be written\n"),
        (["--gt", "{data}", "--results", "row.csv"], "error: {tmp}: not a finished run folder (no run.json)\n"),
    ],
)
def test_scoring_mistakes_are_found_before_predicting(segment_run, scoring, message, tmp_path, capsys):
    run, _ = segment_run
    data = Path(yaml.safe_load((run / "config.yaml").read_text())["data"]) / "validation"
    loose = tmp_path / "best.ckpt"  # a checkpoint out of its run folder: no run.json beside it
    loose.write_bytes((run / "best.ckpt").read_bytes())
    scoring = [arg.format(tmp=tmp_path, data=data) for arg in scoring]
    argv = ["segment", "predict", "--checkpoint", loose, "--input", data, "--output", tmp_path / "masks"]
    status, out, err = run_cli(capsys, *argv, "--device", "cpu", *scoring)
    assert (status, out, err) == (2, "", message.format(tmp=tmp_path, data=data))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]


def test_best_ckpt_holds_the_weights_alone_and_predicts_like_the_full_checkpoint(segment_run, tmp_path, capsys):
    run, _ = segment_run
    best, last = checkpoint(run / "best.ckpt"), checkpoint(run / "last.ckpt")  # one epoch: the same weights
    assert "optimizer_states" in last and not {"optimizer_states", "lr_schedulers", "callbacks"} & best.keys()
    assert best["hyper_parameters"] == last["hyper_parameters"] and best["epoch"] == last["epoch"] == 0
    assert same_tensors(best["state_dict"], last["state_dict"])
    assert (run / "best.ckpt").stat().st_size < 0.6 * (run / "last.ckpt").stat().st_size

    data = Path(yaml.safe_load((run / "config.yaml").read_text())["data"]) / "validation"
    masks = {}
    for name in ("best", "last"):
        argv = ["segment", "predict", "--checkpoint", run / f"{name}.ckpt", "--input", data, "--output"]
        status, _, err = run_cli(capsys, *argv, tmp_path / name, "--device", "cpu")
        assert status == 0, err
        masks[name] = {path.name: path.read_bytes() for path in (tmp_path / name).iterdir()}
    assert len(masks["best"]) == 3 and masks["best"] == masks["last"]


def test_best_ckpt_of_an_ema_run_holds_the_averaged_weights(tmp_path, capsys):
    """WeightAveraging swaps the average into a checkpoint's state_dict as it is saved: best.ckpt keeps it,
    and neither the raw weights nor the averaging state (last.ckpt keeps them, to resume)."""
    from dlcv.data.synthetic import make_classification_set

    data = make_classification_set(tmp_path / "data", classes=3, per_class=8, size=16, seed=2, val_per_class=2)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    argv = ["classify", "train", "--data", data, "--out", run, "--config", config, "--model", "resnet20_cifar"]
    status, _, err = run_cli(capsys, *argv, "--epochs", "1", "--batch-size", "8", "--ema", "0.9")
    assert status == 0, err
    best, last = checkpoint(run / "best.ckpt"), checkpoint(run / "last.ckpt")
    assert same_tensors(best["state_dict"], last["state_dict"])  # the average
    assert not same_tensors(best["state_dict"], last["current_model_state"])  # not the raw weights
    assert not {"current_model_state", "averaging_state", "optimizer_states"} & best.keys()

    predictions = {}
    for name in ("best", "last"):
        argv = ["classify", "predict", "--checkpoint", run / f"{name}.ckpt", "--input", data / "val_50"]
        status, _, err = run_cli(capsys, *argv, "--output", tmp_path / f"{name}.csv", "--device", "cpu")
        assert status == 0, err
        predictions[name] = (tmp_path / f"{name}.csv").read_text()
    assert predictions["best"] == predictions["last"] == (run / "val_predictions.csv").read_text()


def test_an_ema_run_resumed_ends_with_the_average_of_one_run_straight_through(tmp_path, capsys):
    """The average and its update count live in last.ckpt: a run stopped after epoch 0 and resumed ends with
    the weights, average and metrics of the same run trained without a stop."""
    from dlcv.data.synthetic import make_classification_set

    data = make_classification_set(tmp_path / "data", classes=3, per_class=8, size=16, seed=2, val_per_class=2)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    argv = ["classify", "train", "--data", data, "--config", config, "--model", "resnet20_cifar", "--batch-size", "8"]
    argv += ["--ema", "0.9", "--policy", "trivialaugment"]
    for run, epochs in (("straight", "2"), ("stopped", "1")):
        status, _, err = run_cli(capsys, *argv, "--out", tmp_path / run, "--epochs", epochs)
        assert status == 0, err
    status, _, err = run_cli(capsys, "classify", "train", "--out", tmp_path / "stopped", "--resume", "--epochs", "2")
    assert status == 0, err
    straight, resumed = checkpoint(tmp_path / "straight" / "last.ckpt"), checkpoint(tmp_path / "stopped" / "last.ckpt")
    assert same_tensors(straight["state_dict"], resumed["state_dict"])  # the average
    assert same_tensors(straight["current_model_state"], resumed["current_model_state"])
    assert (tmp_path / "straight" / "metrics.csv").read_text() == (tmp_path / "stopped" / "metrics.csv").read_text()

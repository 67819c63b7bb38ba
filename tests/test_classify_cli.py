"""Classification end to end through the CLI: train, predict, eval, tsne, confusion; errors; real images."""

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import DEVICES, no_host_sync, run_checkpoint_cli, run_cli

TINY = {"workers": 0, "device": "cpu"}
#: A cheap model for the CPU: 0.27M parameters.
MODEL = "resnet20_cifar"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a busy CPU: one thread is faster than several waiting for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def train(capsys, data, run, config, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        capsys,
        "classify",
        "train",
        "--data",
        data,
        "--model",
        MODEL,
        "--out",
        run,
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--config",
        config,
        *extra,
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, classification_dir, tiny_config) -> Path:
    from dlcv.cli import main  # a module-scoped fixture cannot take capsys

    run = tmp_path_factory.mktemp("runs") / MODEL
    argv = ["classify", "train", "--data", classification_dir, "--model", MODEL, "--out", run, "--epochs", "2"]
    argv += ["--batch-size", "8", "--lr", "0.01", "--config", tiny_config]
    assert main([str(a) for a in argv]) == 0
    return run


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_folder_holds_everything(trained_run, classification_dir):
    for name in ("best.ckpt", "last.ckpt", "metrics.csv", "config.yaml", "architecture.txt", "val_predictions.csv"):
        assert (trained_run / name).is_file(), name
    rows = read_rows(trained_run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert list(rows[0]) == ["epoch", "train_loss", "val_acc", *(f"val_acc_class{k}" for k in range(4))]
    assert all(np.isfinite(float(r["train_loss"])) and 0 <= float(r["val_acc"]) <= 1 for r in rows)
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["model"] == MODEL and config["epochs"] == 2 and config["label_smoothing"] == 0.1
    assert config["device"] == "cpu" and config["policy"] == "none"
    predictions = read_rows(trained_run / "val_predictions.csv")
    names = sorted(p.name for p in (classification_dir / "val_50").iterdir())
    assert [r["image_id"] for r in predictions] == names


def test_val_predictions_score_the_best_val_acc(trained_run, classification_dir, capsys):
    """best.ckpt's predictions, scored by `eval`, give exactly the best validation accuracy of training."""
    status, out, err = run_cli(
        capsys,
        "classify",
        "eval",
        "--pred",
        trained_run / "val_predictions.csv",
        "--gt",
        classification_dir / "val_gt.csv",
        "--json",
    )
    assert status == 0, err
    best = max(float(r["val_acc"]) for r in read_rows(trained_run / "metrics.csv"))
    assert json.loads(out)["accuracy"] == pytest.approx(best, abs=1e-6)


def test_predict_writes_the_graders_csv(trained_run, classification_dir, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    status, stdout, err = run_checkpoint_cli(
        capsys, "classify", "predict", trained_run / "best.ckpt", classification_dir / "val_50", out, "--device", "cpu"
    )
    assert status == 0, err
    assert stdout == f"wrote 12 predictions to {out}\n"
    lines = out.read_text().splitlines()
    assert lines[0] == "image_id,label" and len(lines) == 13
    names = [line.split(",")[0] for line in lines[1:]]
    assert names == sorted(names) == sorted(p.name for p in (classification_dir / "val_50").iterdir())
    assert {int(line.split(",")[1]) for line in lines[1:]} <= {0, 1, 2, 3}
    assert out.read_text() == (trained_run / "val_predictions.csv").read_text()  # the same model, the same answers


def test_predict_scores_its_csv_as_eval_does_and_keeps_the_row(trained_run, classification_dir, tmp_path, capsys):
    from dlcv.results import read_results, run_result

    out, row_csv = tmp_path / "pred.csv", tmp_path / "row.csv"
    gt = classification_dir / "val_gt.csv"
    scoring = ["--device", "cpu", "--gt", gt, "--results", row_csv]
    status, stdout, err = run_checkpoint_cli(
        capsys, "classify", "predict", trained_run / "best.ckpt", classification_dir / "val_50", out, *scoring
    )
    assert status == 0, err
    status, scored, err = run_cli(capsys, "classify", "eval", "--pred", out, "--gt", gt)
    assert status == 0, err
    assert stdout == f"wrote 12 predictions to {out}\n{scored}wrote the score's row to {row_csv}\n"
    [row] = read_results(row_csv)
    accuracy = int(re.match(r"accuracy: \S+ \((\d+)/12\)", scored)[1]) / 12
    assert (row.metric, row.value) == ("accuracy", round(accuracy, 6))
    trained = run_result(trained_run)
    assert (row.model, row.epochs, row.wall_s) == (trained.model, trained.epochs, trained.wall_s)
    assert row.split == "validation"  # --split's default
    assert row.command.startswith("dlcv classify predict --checkpoint ") and row.command.endswith(str(row_csv))


@pytest.mark.parametrize(
    "gt_text, message",
    [
        (
            "name,class\n0_0.png,0\n",
            "error: {gt}: expected the header filename,label or image_id,label, found 'name,class'\n",
        ),
        (
            "{rows}9_0.png,9\n9_1.png,9\n",
            "error: {gt}: labels for 2 images not in {images}: 9_0.png, 9_1.png\n",
        ),
        ("{short_rows}", "error: {gt}: no label for 1 image of {images}: 3_2.png\n"),
    ],
    ids=["malformed", "rows of another split", "an image without a row"],
)
def test_predict_checks_the_ground_truth_before_predicting(
    trained_run, classification_dir, gt_text, message, tmp_path, capsys
):
    gt, checkpoint, images = tmp_path / "gt.csv", trained_run / "best.ckpt", classification_dir / "val_50"
    rows = (classification_dir / "val_gt.csv").read_text()
    gt.write_text(gt_text.format(rows=rows, short_rows=rows.replace("3_2.png,3\n", "")))
    status, stdout, err = run_checkpoint_cli(
        capsys, "classify", "predict", checkpoint, images, tmp_path / "p.csv", "--device", "cpu", "--gt", gt
    )
    assert (status, stdout, err) == (2, "", message.format(gt=gt, images=images))
    assert [p.name for p in tmp_path.iterdir()] == ["gt.csv"]


def test_eval_text_matches_a_hand_count(tmp_path, capsys):
    truth = tmp_path / "truth"
    truth.mkdir()
    names = ["0_0.png", "0_1.png", "0_2.png", "1_0.png", "1_1.png", "2_0.png"]
    for name in names:
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(truth / name)
    predictions = tmp_path / "pred.csv"
    # Class 0: 2 of 3 right; class 1: 0 of 2; class 2: 1 of 1 -> 3 of 6.
    predictions.write_text("image_id,label\n0_0.png,0\n0_1.png,0\n0_2.png,2\n1_0.png,0\n1_1.png,2\n2_0.png,2\n")
    status, out, err = run_cli(capsys, "classify", "eval", "--pred", predictions, "--gt", truth)
    assert status == 0, err
    assert out.splitlines() == [
        "accuracy: 0.5000 (3/6)",
        "",
        "per-class accuracy:",
        "class 0: 0.6667 (2/3)",
        "class 1: 0.0000 (0/2)",
        "class 2: 1.0000 (1/1)",
    ]
    gt_csv = tmp_path / "gt.csv"
    gt_csv.write_text("filename,label\n" + "".join(f"{n},{n[0]}\n" for n in names))
    status, out, _ = run_cli(capsys, "classify", "eval", "--pred", predictions, "--gt", gt_csv, "--json")
    score = json.loads(out)
    assert status == 0 and (score["accuracy"], score["correct"], score["total"]) == (0.5, 3, 6)
    assert score["per_class"]["0"] == {"accuracy": pytest.approx(2 / 3), "correct": 2, "total": 3}
    assert score["confusion"][1] == [1, 0, 1]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("0_0.png,0\n", "no label for 1 image of .*: 1_0.png"),
        ("0_0.png,0\n1_0.png,1\n5_5.png,5\n", "labels for 1 image not in .*: 5_5.png"),
        ("0_0.png,0\n1_0.png,1\n0_0.png,0\n", "line 4: 0_0.png appears twice"),
        ("0_0.png,0\n1_0.png,1000000000\n", "line 3: label '1000000000' of 1_0.png is not a class number"),
    ],
)
def test_eval_rows_missing_extra_or_repeated(tmp_path, capsys, rows, message):
    gt = tmp_path / "gt.csv"
    gt.write_text("filename,label\n0_0.png,0\n1_0.png,1\n")
    predictions = tmp_path / "pred.csv"
    predictions.write_text("image_id,label\n" + rows)
    status, _, err = run_cli(capsys, "classify", "eval", "--pred", predictions, "--gt", gt)
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"error: {predictions}")
    assert re.search(message, err)


def test_tsne_and_confusion_figures(trained_run, classification_dir, tmp_path, capsys):
    figure = tmp_path / "figures" / "tsne.png"
    checkpoint, images = trained_run / "best.ckpt", classification_dir / "val_50"
    status, out, err = run_checkpoint_cli(capsys, "classify", "tsne", checkpoint, images, figure, "--device", "cpu")
    assert status == 0, err
    assert out.split() == [str(figure), str(figure.with_suffix(".csv"))]
    assert Image.open(figure).format == "PNG"
    points = read_rows(figure.with_suffix(".csv"))
    assert list(points[0]) == ["x", "y", "label", "image_id", "layer"] and len(points) == 12
    assert all(p["label"] == p["image_id"].split("_")[0] for p in points)
    assert all(np.isfinite([float(p["x"]), float(p["y"])]).all() for p in points)

    status, _, err = run_checkpoint_cli(
        capsys, "classify", "tsne", checkpoint, images, tmp_path / "other.png", "--layer", "no.such.layer"
    )
    assert status == 2 and "no.such.layer" in err and not (tmp_path / "other.png").exists()

    matrix = tmp_path / "confusion.png"
    status, out, err = run_cli(
        capsys,
        "classify",
        "confusion",
        "--pred",
        trained_run / "val_predictions.csv",
        "--gt",
        classification_dir / "val_50",
        "--output",
        matrix,
    )
    assert status == 0, err
    assert out.splitlines()[0].startswith("accuracy: ") and Image.open(matrix).format == "PNG"


def test_existing_run_is_kept_and_resume_extends_it(trained_run, classification_dir, tiny_config, tmp_path, capsys):
    before = (trained_run / "metrics.csv").read_text()
    status, _, err = train(capsys, classification_dir, trained_run, tiny_config, "--epochs", "1")
    assert status == 2 and "already holds a run" in err and err.count("\n") == 1
    assert (trained_run / "metrics.csv").read_text() == before

    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    for stale in ("tsne.csv", "tsne.png"):  # the earlier model's t-SNE, which the report would show
        (run / stale).write_text("of the model before the resume")
    status, _, err = run_cli(capsys, "classify", "train", "--out", run, "--resume", "--epochs", "3")
    assert status == 0, err
    rows = read_rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert rows[:2] == read_rows(trained_run / "metrics.csv")
    assert not (run / "tsne.csv").exists() and not (run / "tsne.png").exists()
    assert (run / "val_predictions.csv").is_file()


def test_strong_augmentation_and_ema(classification_dir, tiny_config, tmp_path, capsys):
    run = tmp_path / "strong"
    status, _, err = train(
        capsys,
        classification_dir,
        run,
        tiny_config,
        "--epochs",
        "1",
        "--policy",
        "trivialaugment",
        "--mixup",
        "0.2",
        "--cutmix",
        "1.0",
        "--ema",
        "0.9",
    )
    assert status == 0, err
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["policy"], config["mixup"], config["cutmix"], config["ema"]) == ("trivialaugment", 0.2, 1.0, 0.9)
    assert len(read_rows(run / "val_predictions.csv")) == 12
    import torch

    checkpoint = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert "current_model_state" in checkpoint  # the averaged weights are the saved ones (best.ckpt: test_run_folder)


@pytest.mark.parametrize("device", DEVICES)
def test_weight_ema_follows_the_model_early_then_settles_at_its_decay(device):
    import torch
    from torch import nn

    from dlcv.training.classification import WarmedEMA

    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).to(device)
    nn.init.zeros_(model[0].weight)
    averaged = WarmedEMA(model, 0.999)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].num_batches_tracked.fill_(50)
    with no_host_sync(device):
        averaged.update_parameters(model)  # the first update copies the model
    assert torch.equal(averaged.module[0].weight, model[0].weight)
    with torch.no_grad():
        model[0].weight.zero_()
    for _ in range(50):
        averaged.update_parameters(model)
    # A plain EMA at 0.999 would still sit at 0.999 ** 50 = 0.951.
    assert torch.all(averaged.module[0].weight < 0.01)
    assert int(averaged.module[1].num_batches_tracked) == 50  # integer buffers (counters) follow the model
    for _ in range(9000):  # the warm-up reaches 0.999 at 8,991 updates
        averaged.update_parameters(model)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    averaged.update_parameters(model)
    settled = torch.full((2, 2), 0.001, device=device)  # 0.999 of the average (0), 0.001 of the model
    assert torch.allclose(averaged.module[0].weight, settled)


def copy_set(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize(
    ("damage", "culprit"),
    [
        (lambda d: Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "train_50" / "dog.png"), "dog.png"),
        (lambda d: (d / "train_50" / "3_99.png").write_bytes(b"\x89PNG\r\n broken"), "3_99.png"),
        (lambda d: (d / "val_gt.csv").write_text((d / "val_gt.csv").read_text() + "9_9.png,3\n"), "val_gt.csv"),
        (lambda d: (d / "val_gt.csv").write_text((d / "val_gt.csv").read_text() + "0_0.png,0\n"), "val_gt.csv"),
        (lambda d: shutil.rmtree(d / "val_50"), "train_50/ and val_50/"),
    ],
    ids=["no-label", "unreadable", "csv-unknown", "csv-duplicate", "no-val"],
)
def test_train_data_errors(damage, culprit, classification_dir, tiny_config, tmp_path, capsys):
    data = copy_set(classification_dir, tmp_path / "data")
    damage(data)
    status, _, err = train(capsys, data, tmp_path / "run", tiny_config, "--epochs", "1")
    assert status == 2 and err.startswith("error: ") and culprit in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "culprit"),
    [
        (["--model", "fcn8s"], "fcn8s"),
        (["--policy", "autoaugment"], "--policy"),
        (["--ema", "1.5"], "--ema: ema 1.5: must lie in [0, 1)"),
    ],
)
def test_train_flag_errors(flags, culprit, classification_dir, tiny_config, tmp_path, capsys):
    status, _, err = train(capsys, classification_dir, tmp_path / "run", tiny_config, "--epochs", "1", *flags)
    assert status == 2 and culprit in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_class_count_must_match_the_checkpoint(trained_run, classification_dir, tmp_path, capsys):
    """A 4-class model refuses images labelled 7, and a 4-class run refuses to resume on 8 classes."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "7_0.png")
    out = tmp_path / "pred.csv"
    status, _, err = run_checkpoint_cli(capsys, "classify", "predict", trained_run / "best.ckpt", folder, out)
    assert status == 2 and "best.ckpt" in err and "4 classes" in err and "7_0.png" in err
    assert not out.exists()

    from dlcv.data.synthetic import make_classification_set

    data = make_classification_set(tmp_path / "eight", classes=8, per_class=2, size=16, val_per_class=1)
    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    status, _, err = run_cli(capsys, "classify", "train", "--data", data, "--out", run, "--resume", "--epochs", "3")
    assert status == 2 and "last.ckpt: trained for 4 classes" in err and "has 8" in err


def test_predict_input_errors(trained_run, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    out = tmp_path / "pred.csv"
    status, _, err = run_checkpoint_cli(capsys, "classify", "predict", trained_run / "best.ckpt", folder, out)
    assert status == 2 and "a.png" in err and not out.exists()
    status, _, err = run_checkpoint_cli(capsys, "classify", "predict", tmp_path / "none.ckpt", folder, out)
    assert status == 2 and "none.ckpt" in err


def test_real_images_train_predict_eval(real_p1, tmp_path, capsys):
    """5 classes x 10 course images, 1 epoch of the default model: the whole path on the real data."""
    data = tmp_path / "p1"
    chosen = {}
    for split, indices in (("train_50", range(10)), ("val_50", range(450, 454))):
        (data / split).mkdir(parents=True)
        for label in (0, 7, 13, 31, 49):
            for index in indices:
                shutil.copy(real_p1 / split / f"{label}_{index}.png", data / split)
                if split == "val_50":
                    chosen[f"{label}_{index}.png"] = label
    real_gt = {row["filename"]: row["label"] for row in read_rows(real_p1 / "val_gt.csv")}
    (data / "val_gt.csv").write_text("filename,label\n" + "".join(f"{n},{real_gt[n]}\n" for n in sorted(chosen)))
    run = tmp_path / "run"
    status, _, err = run_cli(
        capsys,
        "classify",
        "train",
        "--data",
        data,
        "--out",
        run,
        "--epochs",
        "1",
        "--batch-size",
        "25",
        "--device",
        "cpu",
        "--workers",
        "0",
    )
    assert status == 0, err
    assert "50 training and 20 validation images, 50 classes" in err
    predictions = tmp_path / "pred.csv"
    status, _, err = run_checkpoint_cli(
        capsys, "classify", "predict", run / "best.ckpt", data / "val_50", predictions, "--device", "cpu"
    )
    assert status == 0, err
    status, from_csv, _ = run_cli(capsys, "classify", "eval", "--pred", predictions, "--gt", data / "val_gt.csv")
    status_folder, from_folder, _ = run_cli(capsys, "classify", "eval", "--pred", predictions, "--gt", data / "val_50")
    assert status == status_folder == 0 and from_csv == from_folder
    assert from_csv.splitlines()[0].endswith("/20)")

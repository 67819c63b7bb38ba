"""`dlcv reproduce` (presets, quick overlay, scores, report, results.csv), `dlcv results publish`, and
the precedence defaults < --config < flags of the train commands."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import dlcv.reproduce
from dlcv.config import resolve_config
from dlcv.metrics import evaluate_label_csv, evaluate_mask_folders
from dlcv.models import build_model
from dlcv.results import COLUMNS, Result, read_results, render_markdown, run_result, seed_groups, write_results
from tests.conftest import run_cli

#: Laid over the quick presets in the test only, so that training takes seconds on generated data.
TINY = {
    "segment": {"model_kwargs": {"fc_channels": 32}, "image_size": 32, "snapshot_ids": ["0000", "0001"]},
    "classify": {"model": "resnet18", "model_kwargs": {"input_size": 16}, "batch_size": 8},
}


@pytest.fixture(scope="module")
def hw2_dir(tmp_path_factory) -> Path:
    """The course layout, generated: p1_data (train_50, val_50, val_gt.csv) and p2_data (train, validation)."""
    from dlcv.data.synthetic import make_classification_set, make_landcover_set

    root = tmp_path_factory.mktemp("hw2")
    make_classification_set(root / "p1_data", classes=4, per_class=6, size=16, seed=3, val_per_class=3)
    make_landcover_set(root / "p2_data", train=6, validation=3, size=40, seed=4)
    return root


def test_presets_resolve_full_and_quick(tmp_path):
    """Every shipped preset is a valid config; --quick scales it down and keeps the whole validation set."""
    for quick in (False, True):
        for name in dlcv.reproduce.preset_names():
            experiment = dlcv.reproduce.experiment_for(name)
            files = dlcv.reproduce.preset_files(experiment, quick)
            config = resolve_config(dlcv.reproduce.CONFIG_CLASSES[experiment.task], files, {})
            with torch.device("meta"):  # the options build the model (shapes only, no memory)
                build_model(config.model, 7, **config.model_kwargs)
            assert config.model == experiment.model and config.weights in ("imagenet", "none")
            assert config.limit_val is None
            assert (config.limit_train is not None) == quick
            if quick:
                assert config.epochs <= 3
            else:
                assert config.epochs >= 20


def _lay_over_presets(monkeypatch, folder: Path, values: dict[str, dict]) -> dict[str, Path]:
    """Lay a YAML file of ``values[task]`` over each experiment's preset files; return the files by task."""
    overlays = {task: folder / f"overlay_{task}.yaml" for task in values}
    for task, path in overlays.items():
        path.write_text(yaml.safe_dump(values[task]))
    real_files = dlcv.reproduce.preset_files
    monkeypatch.setattr(dlcv.reproduce, "preset_files", lambda e, quick: [*real_files(e, quick), overlays[e.task]])
    return overlays


#: Runs ``dlcv`` with the overlays of argv[1] (JSON, by task) and prints, as its last line, the dlcv modules
#: first loaded after the first ``Trainer.fit`` began.
LATE_IMPORTS_PROBE = """
import json, sys
from pathlib import Path
import lightning.pytorch as pl
import dlcv.reproduce
from dlcv.cli import main

overlays = json.loads(sys.argv[1])
real_files, real_fit, loaded_at_fit = dlcv.reproduce.preset_files, pl.Trainer.fit, []
dlcv.reproduce.preset_files = lambda e, quick: [*real_files(e, quick), Path(overlays[e.task])]

def dlcv_modules():
    return {name for name in sys.modules if name.split(".")[0] == "dlcv"}

def fit(*args, **kwargs):
    loaded_at_fit.append(dlcv_modules())
    return real_fit(*args, **kwargs)

pl.Trainer.fit = fit
status = main(sys.argv[2:])
late = dlcv_modules() - loaded_at_fit[0]
print(json.dumps({"status": status, "fits": len(loaded_at_fit), "late": sorted(late)}))
"""


def test_reproduce_quick_end_to_end(hw2_dir, tmp_path, capsys, monkeypatch):
    """Run in a fresh process (other tests' imports must not count), which also shows that scoring, t-SNE and
    the report are imported before the first epoch: hours of training must not end in code the checkout
    holds by then."""
    overlays = _lay_over_presets(monkeypatch, tmp_path, TINY)  # this process's, for the second run
    out = tmp_path / "out"
    argv = ["reproduce", "--data", hw2_dir, "--out", out, "--quick", "--weights", "none", "--device", "cpu"]
    probe = [sys.executable, "-c", LATE_IMPORTS_PROBE, json.dumps({k: str(v) for k, v in overlays.items()})]
    done = subprocess.run([*probe, *map(str, argv)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"status": 0, "fits": 3, "late": []}
    assert "report: " in done.stdout and "results: " in done.stdout

    results = read_results(out / "results.csv")
    assert [(r.task, r.model, r.metric) for r in results] == [
        ("classify", "resnet18", "accuracy"),
        ("segment", "fcn32s", "miou"),
        ("segment", "fcn8s", "miou"),
    ]
    report_experiments = [dlcv.reproduce.experiment_for(name) for name in dlcv.reproduce.REPORT_PRESETS]
    for result, experiment in zip(results, report_experiments, strict=True):
        assert result.device == "cpu" and result.split == "validation" and result.weights == "none"
        assert "--quick" in result.command.split() and result.commit and result.wall_s > 0
        assert run_result(out / "runs" / experiment.model).command == result.command  # run.json names it too
        config = yaml.safe_load((out / "runs" / experiment.model / "config.yaml").read_text())
        assert config["epochs"] == result.epochs  # the quick overlay's epochs, trained to the end
        assert config["limit_train"] is not None and config["limit_val"] is None
    # The recorded scores are the graders' scores of what best.ckpt predicts on the whole validation set.
    classify, fcn32s, fcn8s = results
    score = evaluate_label_csv(out / "runs" / "vgg16_bn" / "val_predictions.csv", hw2_dir / "p1_data" / "val_gt.csv")
    assert classify.value == pytest.approx(score.accuracy, abs=1e-6) and score.total == 12
    for result in (fcn32s, fcn8s):
        masks = evaluate_mask_folders(out / "predictions" / result.model, hw2_dir / "p2_data" / "validation")
        assert masks.images == 3 and result.value == pytest.approx(masks.miou, abs=1e-6)
    assert (out / "runs" / "vgg16_bn" / "tsne.csv").is_file()

    page = (out / "report.html").read_text(encoding="utf-8")
    assert all(name in page for name in ("resnet18", "fcn32s", "fcn8s", "Per-class IoU", "Confusion matrix"))

    # A second run into the same folder refuses before training anything.
    status, _, err = run_cli(capsys, *argv)
    assert status == 2 and "--overwrite" in err and err.count("\n") == 1


def test_reproduce_names_a_missing_data_folder(hw2_dir, tmp_path, capsys):
    status, _, err = run_cli(capsys, "reproduce", "--data", hw2_dir / "p2_data", "--out", tmp_path / "out", "--quick")
    assert status == 2 and "p1_data" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_reproduce_names_the_preset_file_of_a_bad_value(hw2_dir, tmp_path, capsys, monkeypatch):
    """A bad value in a preset is the file's fault, not a flag's: the error names that file."""
    overlays = _lay_over_presets(monkeypatch, tmp_path, {"classify": {}, "segment": {"scale_range": [2.0, 1.0]}})
    out = tmp_path / "out"
    status, _, err = run_cli(capsys, "reproduce", "--data", hw2_dir, "--out", out, "--quick", "--device", "cpu")
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {overlays['segment']}: scale_range must be two zoom factors")
    assert not out.exists()


def _result(model: str, value: float, command: str, commit: str = "abc1234") -> Result:
    return Result(
        "segment",
        model,
        "hed.safetensors",
        "validation",
        "miou",
        value,
        3,
        60.0,
        "cpu",
        command,
        commit,
        "2026-01-01",
    )


def test_publish_appends_once_and_renders(tmp_path, capsys):
    docs = tmp_path / "docs"
    first = write_results(tmp_path / "a.csv", [_result("fcn8s", 0.25, "dlcv reproduce --quick --data X")])
    second = write_results(tmp_path / "b.csv", [_result("fcn32s", 0.5, "dlcv reproduce --data X")])
    for expected in ("1 row", "0 rows"):  # publishing the same file again adds nothing
        status, out, err = run_cli(capsys, "results", "publish", first, "--docs", docs)
        assert status == 0 and f"added {expected} to" in out, err
    status, _, _ = run_cli(capsys, "results", "publish", second, "--docs", docs)
    with (docs / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS and [r["model"] for r in rows] == ["fcn8s", "fcn32s"]
    markdown = (docs / "RESULTS.md").read_text()
    # Each measured number beside the report's number for its model, quick runs labelled as such.
    assert "| fcn8s | hed.safetensors | validation | 0.2500 | 0.6987 | quick |" in markdown
    assert "| fcn32s | hed.safetensors | validation | 0.5000 | 0.6805 | all data |" in markdown
    assert "74.16%" in markdown and "0.7614" in markdown


def test_seed_groups_gather_one_recipe_over_its_seeds():
    preset = "strong_deeplabv3plus_vgg16"
    train = f"dlcv segment train --config {preset} --data 'P2 DIR' --epochs 5"
    rows = [
        _result("fcn8s", 0.50, f"{train} --out runs/a"),
        _result("fcn8s", 0.40, f"{train} --seed 1 --out runs/b"),
        _result("fcn8s", 0.30, f"{train} --loss ce --seed 1 --out runs/c"),  # another recipe
        _result("fcn8s", 0.45, f"{train} --out=runs/d --seed=2"),
        _result("fcn8s", 0.20, f"{train} --config a.yaml --config b.yaml --seed 1"),  # b.yaml wins here...
        _result("fcn8s", 0.10, f"{train} --config b.yaml --config a.yaml --seed 2"),  # ...a.yaml here: two recipes
        # a rerun of seed 1, its options in another order: the code changed, so a new series begins
        _result("fcn8s", 0.52, f"dlcv segment train --out e --epochs 5 --seed 1 --data 'P2 DIR' --config={preset}"),
        _result("fcn8s", 0.60, "dlcv segment predict --checkpoint runs/a/best.ckpt --tta"),  # not training
    ]
    (group,) = seed_groups(rows)
    assert group.recipe == train and group.seeds == ("-", "1", "2") and group.values == (0.50, 0.40, 0.45)
    rows.append(_result("fcn8s", 0.56, f"{train} --seed 2", commit="bbbbbbb"))
    first, second = seed_groups(rows)
    assert first == group and second.seeds == ("1", "2") and second.values == (0.52, 0.56)
    markdown = render_markdown(rows)
    # mean 0.45, sample standard deviation 0.05; then mean 0.54, std 0.028284
    assert (
        f"| fcn8s | 3 | -, 1, 2 | 0.4500 | 0.0500 | 0.4000 | 0.5000 | {', '.join(group.commits)} | `{train}` |"
        in markdown
    )
    assert "| fcn8s | 2 | 1, 2 | 0.5400 | 0.0283 | 0.5200 | 0.5600 |" in markdown
    assert second.commits[-1] == "bbbbbbb" and markdown.index("0.4500 |") < markdown.index("0.5400 |")
    one_seed_twice = [rows[1], rows[2], rows[4], rows[5], rows[6], rows[7]]
    assert not seed_groups(one_seed_twice) and "Repeated runs" not in render_markdown(one_seed_twice)


def test_publish_refuses_a_foreign_csv(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,value\nfcn8s,0.5\n")
    status, _, err = run_cli(capsys, "results", "publish", bad, "--docs", tmp_path / "docs")
    assert status == 2 and "bad.csv" in err and err.count("\n") == 1
    assert not (tmp_path / "docs").exists()


@pytest.mark.parametrize(
    ("group", "data_fixture", "model", "extra"),
    [
        ("segment", "landcover_dir", "fcn32s", {"model_kwargs": {"fc_channels": 32}, "image_size": 32}),
        ("classify", "classification_dir", "resnet18", {"model_kwargs": {"input_size": 16}}),
    ],
)
def test_train_config_precedence(group, data_fixture, model, extra, tmp_path, capsys, request):
    """defaults < --config A.yaml < --config B.yaml < flags, and the run folder keeps the resolved result."""
    data = request.getfixturevalue(data_fixture)
    base, overlay = tmp_path / "base.yaml", tmp_path / "overlay.yaml"
    base.write_text(yaml.safe_dump({"epochs": 1, "lr": 0.5, "batch_size": 2, "workers": 0, "device": "cpu", **extra}))
    overlay.write_text(yaml.safe_dump({"lr": 0.25, "batch_size": 4}))
    run = tmp_path / "run"
    argv = [group, "train", "--data", data, "--model", model, "--out", run, "--config", base, "--config", overlay]
    status, _, err = run_cli(capsys, *argv, "--lr", "0.001")
    assert status == 0, err
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["lr"] == 0.001  # the flag beats the files
    assert saved["batch_size"] == 4  # the later file beats the earlier one
    assert saved["epochs"] == 1  # a file beats the defaults
    assert saved["weight_decay"] == 5e-4 and saved["seed"] == 0  # defaults where neither speaks
    assert saved["model"] == model and saved["data"] == str(data)


def test_unknown_preset_is_a_user_error(hw2_dir, tmp_path, capsys):
    status, _, err = run_cli(capsys, "reproduce", "--data", hw2_dir, "--out", tmp_path / "o", "--presets", "nope")
    assert status == 2 and "unknown preset 'nope'" in err and "strong_deeplabv3plus_vgg16" in err
    assert not (tmp_path / "o").exists()


def test_config_names_a_shipped_preset_from_any_folder(tmp_path, monkeypatch):
    from dlcv.config import SegmentConfig
    from dlcv.errors import UserError

    monkeypatch.chdir(tmp_path)
    for name in ("report_fcn8s", "report_fcn8s.yaml"):
        config = resolve_config(SegmentConfig, [name], {"epochs": 2})
        assert (config.model, config.lr, config.epochs) == ("fcn8s", 0.001, 2)
    (tmp_path / "report_fcn8s.yaml").write_text("model: fcn32s\n")  # a file of that name comes first
    assert resolve_config(SegmentConfig, ["report_fcn8s.yaml"], {}).model == "fcn32s"
    with pytest.raises(UserError, match="no_such_preset: no such config file"):
        resolve_config(SegmentConfig, ["no_such_preset"], {})

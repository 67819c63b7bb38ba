"""``dlcv demo``, the README's first command: both tasks end to end on generated data, as a new user runs it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from dlcv.demo import DEMO_IDS
from dlcv.metrics import evaluate_mask_folders
from tests.conftest import run_cli

RUNS = ["fcn8s", "fcn32s", "resnet20_cifar"]


def test_demo_trains_scores_draws_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    status, stdout, err = run_cli(capsys, "demo", "--out", out)
    assert status == 0, err
    lines = stdout.splitlines()
    assert lines[-1] == f"report: {out / 'report.html'}"

    command = shlex.join(["dlcv", "demo", "--out", str(out)])
    for name in RUNS:
        record = json.loads((out / "runs" / name / "run.json").read_text())
        assert record["command"] == command and record["best_score"] is not None
        assert (out / "runs" / name / "best.ckpt").is_file()

    # What it prints as the graders' score is the graders' score of the masks it wrote, one per validation pair.
    predictions = out / "predictions" / "fcn8s"
    assert f"predicted 16 masks into {predictions}" in lines
    score = evaluate_mask_folders(predictions, out / "data" / "landcover" / "validation")
    assert "graders' score of the predictions:\n" + score.grader_text().rstrip() in stdout

    figures = [Path(line.removeprefix("figure: ")) for line in lines if line.startswith("figure: ")]
    expected = ["compare.png", *(f"overlay_{i}.png" for i in DEMO_IDS), "progress_runs_fcn8s.png"]
    assert [f.name for f in figures] == expected
    assert all(f.parent == out / "figures" and f.stat().st_size > 0 for f in figures)

    # The generated classes are easy: the small ResNet, from scratch, must be far above chance (10 classes).
    accuracy = re.search(r"trained resnet20_cifar: validation accuracy ([\d.]+)% \((\d+)/100\)", stdout)
    assert accuracy is not None and float(accuracy[1]) > 50
    report = (out / "report.html").read_text()
    assert all(name in report for name in RUNS)

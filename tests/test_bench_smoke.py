"""The evaluator benchmark runs end to end on generated masks (its timings are not tested: benchmarks, not tests)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="the benchmark reads memory from /proc")
def test_eval_bench_smoke(tmp_path):
    results = tmp_path / "eval.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "eval_bench.py"), "--smoke", "--json", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(results.read_text())
    # The graders' script and dlcv scored the same (shifted, so non-trivial) pairs identically.
    agreement = report["agreement"]["small"]
    assert agreement["same"]
    assert 0 < agreement["dlcv"]["mean_iou"] < 1
    assert set(report["runs"]) == {"graders_small", "dlcv_small", "dlcv_large"}
    for run in report["runs"].values():
        assert run["median_wall_s"] > 0 and run["median_peak_tree_mib"] > 0
    assert report["runs"]["dlcv_large"]["masks"] == 2 * report["runs"]["dlcv_small"]["masks"]
    assert "identical" in done.stdout


@pytest.mark.parametrize("task", ["segment", "classify"])
def test_train_bench_smoke(tmp_path, task):
    results = tmp_path / "train.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "train_bench.py"), "--smoke", "--task", task, "--json", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(results.read_text())
    for side in ("baseline", "dlcv"):
        measured = report["results"][side]
        assert measured["images_per_s"] > 0 and measured["pipeline_images_per_s"] > 0 and 0 < measured["mfu"] < 1
    assert report["speedup"] > 0

"""The benchmarks run end to end on generated data (their timings are not tested: benchmarks, not tests)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_smoke(script: str, results: Path, *args: str, timeout: int = 300) -> tuple[str, dict]:
    """Run ``bench/script --smoke``; its stdout and the JSON it wrote to ``results``."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", *args, "--json", str(results)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(results.read_text())


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="the benchmark reads memory from /proc")
def test_eval_bench_smoke(tmp_path):
    stdout, report = run_smoke("eval_bench.py", tmp_path / "eval.json", timeout=120)
    # The graders' script and dlcv scored the same (shifted, so non-trivial) pairs identically.
    agreement = report["agreement"]["small"]
    assert agreement["same"]
    assert 0 < agreement["dlcv"]["mean_iou"] < 1
    assert set(report["runs"]) == {"graders_small", "dlcv_small", "dlcv_large"}
    for run in report["runs"].values():
        assert run["median_wall_s"] > 0 and run["median_peak_tree_mib"] > 0
    assert report["runs"]["dlcv_large"]["masks"] == 2 * report["runs"]["dlcv_small"]["masks"]
    assert "identical" in stdout


@pytest.mark.parametrize("task", ["segment", "classify"])
def test_train_bench_smoke(tmp_path, task):
    _, report = run_smoke("train_bench.py", tmp_path / "train.json", "--task", task)
    for side in ("baseline", "dlcv"):
        measured = report["results"][side]
        assert measured["images_per_s"] > 0 and measured["pipeline_images_per_s"] > 0 and 0 < measured["mfu"] < 1
    assert report["speedup"] > 0


def test_layout_bench_smoke(tmp_path):
    _, report = run_smoke("layout_bench.py", tmp_path / "layout.json")
    report = report["results"]
    assert report["resnet20_cifar"]["registry_says"] and not report["fcn32s"]["registry_says"]
    for measured in report.values():
        times = [measured[layout][phase] for layout in ("default", "channels-last") for phase in ("train", "forward")]
        assert all(seconds > 0 for seconds in times)
        assert measured["train_speedup"] > 0 and measured["forward_speedup"] > 0

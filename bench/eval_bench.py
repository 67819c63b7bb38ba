"""``dlcv segment eval`` against the graders' script, whole process against whole process.

Both read a folder of predicted masks and a folder of ground truth and print the graders' text.
Each is started as its own process, alternately (so other load on the machine hits both alike),
several times; the median wall time and peak memory are reported, the two outputs must agree, and
dlcv also scores a much larger folder to show that its memory does not grow with the number of masks.

Predictions are the ground truth shifted by one file (mask i scored against mask i + 1), so the
score is far from trivial; the folders are symbolic links in a temporary folder, nothing is copied.

    python bench/eval_bench.py --gt ../shared/hw2_data/p2_data/validation --extra ../shared/hw2_data/p2_data/train

Peak memory is over the whole process tree (dlcv's pool workers included): /proc is polled and each
process's own peak (VmHWM) is summed. Pages shared between a parent and its forked workers are
counted once per process, so this over-states dlcv's memory, never the graders' (one process).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import median, print_table, write_results
from PIL import Image

from dlcv.data.palette import encode_mask

GRADERS = Path(__file__).resolve().parent / "graders_eval.py"
SCORE_LINE = re.compile(r"^(class #\d+|mean_iou)\s*:\s*(\S+)$")


@dataclass
class Run:
    wall_s: float
    cpu_s: float  # user + system, the process and its workers: less swayed by other load than wall time
    peak_tree_kib: int
    output: str


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from the parent ids in /proc/PID/stat."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(parents.get(pid, ()))
    return tree


def _peak_rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(command: list[str], cores: list[int] | None, poll_s: float = 0.02) -> Run:
    """Run ``command`` to completion: its wall and CPU time, the summed peak RSS of its process tree, its stdout."""
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
        )
        peaks: dict[int, int] = {}
        while True:
            # Reap with wait4 ourselves: its rusage gives the root process's exact peak.
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                wall = time.perf_counter() - started
                break
            for member in _process_tree(process.pid):
                peak = _peak_rss_kib(member)
                if peak is not None:
                    peaks[member] = max(peaks.get(member, 0), peak)
            time.sleep(poll_s)
        process.returncode = os.waitstatus_to_exitcode(status)
        peaks[process.pid] = max(peaks.get(process.pid, 0), usage.ru_maxrss)
        out.seek(0)
        output = out.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit status {process.returncode}")
    return Run(wall, usage.ru_utime + usage.ru_stime, sum(peaks.values()), output)


def scores(output: str) -> dict[str, float]:
    found = {}
    for line in output.splitlines():
        match = SCORE_LINE.match(line.strip())
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def build_set(folder: Path, masks: list[Path], count: int) -> tuple[Path, Path]:
    """``count`` ground-truth links (cycling through ``masks``) and predictions shifted by one."""
    gt, pred = folder / "gt", folder / "pred"
    gt.mkdir(parents=True)
    pred.mkdir()
    chosen = [masks[i % len(masks)] for i in range(count)]
    for i, source in enumerate(chosen):
        (gt / f"{i:05d}_mask.png").symlink_to(source.resolve())
        (pred / f"{i:05d}_mask.png").symlink_to(chosen[(i + 1) % count].resolve())
    return gt, pred


def generate_masks(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Random 512 x 512 palette masks (the graders' script only reads 512 x 512): the smoke run's data."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        classes = np.kron(rng.integers(0, 7, size=(16, 16)), np.ones((32, 32), dtype=np.int64)).astype(np.uint8)
        paths.append(folder / f"{i:04d}_mask.png")
        Image.fromarray(encode_mask(classes)).save(paths[-1])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", help="ground-truth folder (every .png in it, as the graders read)")
    parser.add_argument("--extra", nargs="*", default=[], help="more mask folders to draw the large set from")
    parser.add_argument("--large", type=int, default=2257, help="masks in the large set (dlcv's flat memory)")
    parser.add_argument("--large-baseline", action="store_true", help="also run the graders on the large set")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (after one warm-up each)")
    parser.add_argument("--cores", type=int, default=2, help="pin every process to this many CPUs (0: all)")
    parser.add_argument("--json", help="results file (default bench/results/eval_bench.json)")
    parser.add_argument("--smoke", action="store_true", help="3 generated masks, 1 run: checks the script works")
    args = parser.parse_args(argv)

    usable = sorted(os.sched_getaffinity(0))
    cores = usable[: args.cores] if args.cores else None
    with tempfile.TemporaryDirectory(prefix="dlcv-eval-bench-") as tmp:
        tmp = Path(tmp)
        if args.smoke:
            truth_masks = generate_masks(tmp / "generated", 3)
            args.large, args.runs = 6, 1
        elif not args.gt:
            parser.error("--gt is required (or --smoke)")
        else:
            truth_masks = sorted(p for p in Path(args.gt).iterdir() if p.suffix == ".png")
        pool = truth_masks + [p for folder in args.extra for p in sorted(Path(folder).glob("*.png"))]
        sets = {
            "small": build_set(tmp / "small", truth_masks, len(truth_masks)),
            "large": build_set(tmp / "large", pool, args.large),
        }
        sizes = {"small": len(truth_masks), "large": args.large}

        def command(tool: str, gt: Path, pred: Path) -> list[str]:
            if tool == "graders":
                return [sys.executable, str(GRADERS), "--pred", str(pred), "--labels", str(gt)]
            return [sys.executable, "-m", "dlcv", "segment", "eval", "--pred", str(pred), "--gt", str(gt)]

        plan = [("graders", "small"), ("dlcv", "small"), ("dlcv", "large")]
        if args.large_baseline:
            plan.append(("graders", "large"))
        runs: dict[tuple[str, str], list[Run]] = {key: [] for key in plan}
        for key in plan:  # warm-up: the page cache, Python's bytecode cache
            measure(command(key[0], *sets[key[1]]), cores)
        for round_ in range(args.runs):
            # Alternate the order each round, so that a load trend does not favour one side.
            for key in plan if round_ % 2 == 0 else plan[::-1]:
                runs[key].append(measure(command(key[0], *sets[key[1]]), cores))
                print(
                    f"  round {round_ + 1}/{args.runs} {key[0]:8s} {sizes[key[1]]:5d} masks "
                    f"{runs[key][-1].wall_s:6.2f} s {runs[key][-1].peak_tree_kib / 1024:7.1f} MiB",
                    flush=True,
                )

    # The two must print the same scores on the same data.
    agreement = {}
    for size in ("small", "large"):
        if ("graders", size) in runs:
            graders, ours = scores(runs["graders", size][0].output), scores(runs["dlcv", size][0].output)
            same = graders.keys() == ours.keys() and all(abs(graders[k] - ours[k]) < 1e-9 for k in graders)
            agreement[size] = {"graders": graders, "dlcv": ours, "same": same and len(graders) == 7}
    summary = {
        f"{tool}_{size}": {
            "masks": sizes[size],
            "wall_s": [round(r.wall_s, 3) for r in runs[tool, size]],
            "median_wall_s": round(median([r.wall_s for r in runs[tool, size]]), 3),
            "median_cpu_s": round(median([r.cpu_s for r in runs[tool, size]]), 3),
            "peak_tree_mib": [round(r.peak_tree_kib / 1024, 1) for r in runs[tool, size]],
            "median_peak_tree_mib": round(median([r.peak_tree_kib / 1024 for r in runs[tool, size]]), 1),
        }
        for tool, size in plan
    }
    g, d, dl = summary["graders_small"], summary["dlcv_small"], summary["dlcv_large"]
    ratios = {
        "speedup": round(g["median_wall_s"] / d["median_wall_s"], 2),
        "cpu_time_ratio": round(g["median_cpu_s"] / d["median_cpu_s"], 2),
        "memory_ratio": round(g["median_peak_tree_mib"] / d["median_peak_tree_mib"], 2),
        "dlcv_memory_large_over_small": round(dl["median_peak_tree_mib"] / d["median_peak_tree_mib"], 3),
    }
    print()
    print(f"pinned to CPUs {cores or 'all'}; median of {args.runs} runs each, run alternately")
    print_table(
        ["tool", "masks", "median wall s", "median CPU s", "median peak MiB (process tree)"],
        [
            [
                tool,
                sizes[size],
                f"{summary[f'{tool}_{size}']['median_wall_s']:.2f}",
                f"{summary[f'{tool}_{size}']['median_cpu_s']:.2f}",
                f"{summary[f'{tool}_{size}']['median_peak_tree_mib']:.1f}",
            ]
            for tool, size in plan
        ],
    )
    print()
    print(
        f"dlcv is {ratios['speedup']:.2f}x faster in wall time (target 3x; {ratios['cpu_time_ratio']:.2f}x in CPU "
        f"time) and uses {ratios['memory_ratio']:.1f}x less memory (target 5x) on {sizes['small']} masks"
    )
    print(f"dlcv's memory, {sizes['large']} masks against {sizes['small']}: x{ratios['dlcv_memory_large_over_small']}")
    for size, check in agreement.items():
        print(
            f"scores on the {size} set: {'identical' if check['same'] else 'DIFFERENT'} "
            f"(mean_iou {check['dlcv'].get('mean_iou')})"
        )
    path = write_results(
        "eval_bench", {"cores": cores, "runs": summary, "ratios": ratios, "agreement": agreement}, args.json
    )
    print(f"results: {path}")
    return 0 if all(check["same"] for check in agreement.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Time to accuracy: the wall time from ``dlcv <task> train`` starting to its first validation at the target.

The command runs as a user runs it (process start, data decoding, compilation and validation all
count); ``metrics.csv``, which dlcv rewrites at the end of every epoch, is watched, and the run is
stopped as soon as a row reaches the target (``val_miou`` for segment, ``val_acc`` for classify).
Everything after ``--`` goes to ``dlcv <task> train`` unchanged (a config, weights, batch size...).

    python bench/time_to_accuracy.py --task segment --data P2_DIR --device cuda --target 0.70 -- \\
        --config report_fcn8s.yaml --weights ../shared/weights/vgg16_features_hed.safetensors
    python bench/time_to_accuracy.py --task classify --data P1_DIR --device cuda --target 0.7416

``--dry-run`` trains a few steps on a handful of images (for a CPU): it shows the command starts and
is watched correctly, not a time to accuracy.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import print_table, write_results

#: Per task: the metrics.csv column to watch, the default target, and a dry run's extra flags.
TASKS = {
    "segment": ("val_miou", 0.70, ["--epochs", "2", "--limit-train", "4", "--limit-val", "2", "--image-size", "64"]),
    "classify": ("val_acc", 0.7416, ["--epochs", "2", "--limit-train", "64", "--limit-val", "32"]),
}


def read_rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        return []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--data", required=True, help="p2_data for segment, p1_data for classify")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--target", type=float, help="val_miou (default 0.70) or val_acc (default 0.7416) to reach")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="give up after this long")
    parser.add_argument("--out", help="run folder (default: a temporary one, deleted after)")
    parser.add_argument("--dry-run", action="store_true", help="a few steps on a few images: checks the setup only")
    parser.add_argument("--json", help="results file (default bench/results/time_to_accuracy_TASK.json)")
    args = parser.parse_args(ours)
    column, default_target, dry_flags = TASKS[args.task]
    target = default_target if args.target is None else args.target
    extra = extra + (dry_flags if args.dry_run else [])

    with tempfile.TemporaryDirectory(prefix="dlcv-tta-") as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "run"
        command = [sys.executable, "-m", "dlcv", args.task, "train", "--data", args.data, "--out", str(out)]
        command += ["--device", args.device, *extra]
        print("running:", " ".join(command), flush=True)
        started = time.time()
        process = subprocess.Popen(command, start_new_session=True)
        seen: list[dict] = []
        reached = None
        try:
            while reached is None and time.time() - started < args.max_minutes * 60:
                finished = process.poll() is not None
                rows = read_rows(out / "metrics.csv")
                if len(rows) > len(seen):
                    written = (out / "metrics.csv").stat().st_mtime - started
                    for row in rows[len(seen) :]:
                        value = float(row[column]) if row.get(column) not in (None, "", "nan") else float("nan")
                        seen.append({"epoch": int(row["epoch"]), column: value, "wall_s": round(written, 1)})
                        print(f"  epoch {row['epoch']}: {column} {value:.4f} at {written:.1f} s", flush=True)
                        if reached is None and value >= target:
                            reached = seen[-1]
                if finished:
                    break
                time.sleep(0.5)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # the run and its loader workers, started here
                process.wait()
        wall = time.time() - started

    print()
    print_table(["epoch", column, "wall s"], [[r["epoch"], f"{r[column]:.4f}", f"{r['wall_s']:.1f}"] for r in seen])
    if reached:
        print(
            f"\n{args.task}: {column} {reached[column]:.4f} >= {target} after {reached['wall_s']:.1f} s "
            f"({reached['wall_s'] / 60:.2f} min, epoch {reached['epoch']})"
        )
    else:
        why = "the run ended" if process.returncode not in (None, -signal.SIGTERM) else "stopped"
        print(f"\n{args.task}: {column} did not reach {target} ({why} after {wall:.1f} s; exit {process.returncode})")
    path = write_results(
        f"time_to_accuracy_{args.task}" + ("_dry_run" if args.dry_run else ""),
        {
            "task": args.task,
            "train_command": command,
            "target": target,
            "column": column,
            "epochs": seen,
            "reached": reached,
            "wall_s": round(wall, 1),
            "exit_status": process.returncode,
        },
        args.json,
    )
    print(f"results: {path}")
    return 0 if reached or (args.dry_run and seen) else 1


if __name__ == "__main__":
    sys.exit(main())

"""What every benchmark shares: the machine's description, medians, a printed table, JSON results.

Kept free of torch so that the evaluator benchmark's harness stays light; the scripts import it as
``common`` (``python bench/NAME.py`` puts ``bench/`` on the path).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from dlcv.files import write_text_atomic
from dlcv.metrics import usable_cpus

if TYPE_CHECKING:
    import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """CPU model, cores usable here, memory, load and library versions: what a reader needs to compare."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    with contextlib.suppress(ValueError, OSError):
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    info = {
        "cpu": cpu,
        "cores": usable_cpus(),
        "memory_gib": memory_gib,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }
    for package in ("numpy", "pillow", "torch", "torchvision", "lightning"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    return info


def gpu_name() -> str | None:
    """The CUDA device's name, or None (imports torch: not for the evaluator's harness)."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read next times it (CUDA runs asynchronously)."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_table(headers: list[str], rows: list[list]) -> None:
    """A plain aligned table on stdout (numbers already formatted by the caller)."""
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print(
            "  ".join(
                cell.rjust(width) if i else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))


def write_results(name: str, results: dict, path: str | Path | None) -> Path:
    """Write the benchmark's numbers, with the machine and command line, as JSON; returns the path."""
    path = Path(path) if path else RESULTS_DIR / f"{name}.json"
    results = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        **results,
    }
    write_text_atomic(path, json.dumps(results, indent=2) + "\n")
    return path

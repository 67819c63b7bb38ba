"""Which memory layout steps each model faster on this CPU: the evidence behind ``channels_last_on_cpu``.

On a GPU dlcv runs every model with channels-last weights (tensor cores convolve in NHWC). On a CPU
oneDNN has both layouts, and which is faster depends on the model: a registry entry says
``channels_last_on_cpu=True`` where this benchmark measured its training step faster in channels-last.
For each model it times a training step (forward, cross-entropy, backward, fused SGD) and an inference
forward on random inputs of the course sizes (32 px for classifiers, 512 px for segmenters), in the
default layout and in channels-last, alternately (``--rounds``), from the same starting weights;
medians and the ratio.

    python bench/layout_bench.py --models resnet20_cifar resnet18_cifar vgg16_bn fcn8s unet_vgg16
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import median, print_table, write_results

from dlcv.models import build_model, get_entry, model_names

#: Per task: (classes, batch, image size) of the course data.
SHAPES = {"classify": (50, 64, 32), "segment": (7, 1, 512)}
LAYOUTS = {"default": torch.contiguous_format, "channels-last": torch.channels_last}


def wall_times(run_once: Callable[[], object], steps: int) -> list[float]:
    """Wall seconds of each of ``steps`` calls of ``run_once``."""
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - started)
    return times


def step_times(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, steps: int) -> list[float]:
    """Training steps: forward, cross-entropy, backward, fused SGD."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, fused=True)

    def step() -> None:
        loss = F.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return wall_times(step, steps)


@torch.inference_mode()
def forward_times(model: torch.nn.Module, images: torch.Tensor, steps: int) -> list[float]:
    """Inference forwards."""
    return wall_times(lambda: model(images), steps)


def measure(name: str, rounds: int, steps: int, warmup: int, size: int | None) -> dict:
    entry = get_entry(name)
    task = entry.task
    classes, batch, course_size = SHAPES[task]
    batch = max(batch, entry.min_batch_size)
    size = size or course_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=generator)
    shape = (batch,) if task == "classify" else (batch, size, size)
    targets = torch.randint(0, classes, shape, generator=generator)
    torch.manual_seed(0)
    start = build_model(name, classes).state_dict()
    timed = {layout: {"train": [], "forward": []} for layout in LAYOUTS}
    for round_ in range(rounds):
        order = list(LAYOUTS) if round_ % 2 == 0 else list(reversed(LAYOUTS))
        for layout in order:
            model = build_model(name, classes)
            model.load_state_dict(start)
            model.to(memory_format=LAYOUTS[layout])
            timed[layout]["train"] += step_times(model.train(), images, targets, warmup + steps)[warmup:]
            timed[layout]["forward"] += forward_times(model.eval(), images, warmup + steps)[warmup:]
    result = {"task": task, "batch": batch, "size": size, "registry_says": entry.channels_last_on_cpu}
    for layout, times in timed.items():
        result[layout] = {phase: round(median(values), 4) for phase, values in times.items()}
    for phase in ("train", "forward"):
        result[f"{phase}_speedup"] = round(result["default"][phase] / result["channels-last"][phase], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="model names (default: every registered model)")
    parser.add_argument("--rounds", type=int, default=2, help="both layouts alternately, this many times")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per layout and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per layout and round")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", help="results file (default bench/results/layout_bench.json)")
    parser.add_argument("--smoke", action="store_true", help="a model of each task at 32 px, 1 step: checks the script")
    args = parser.parse_args(argv)
    size = None
    if args.smoke:
        args.models, args.rounds, args.steps, args.warmup, size = ["resnet20_cifar", "fcn32s"], 1, 1, 0, 32
    models = args.models or model_names()
    unknown = sorted(set(models) - set(model_names()))
    if unknown:
        parser.error(f"unknown models {', '.join(unknown)}; choose from {', '.join(model_names())}")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in models:
        results[name] = measure(name, args.rounds, args.steps, args.warmup, size)
        print(f"  {name}: {results[name]}", flush=True)
    print(f"\nmedian seconds over {args.rounds} x {args.steps} steps per layout, {torch.get_num_threads()} threads")
    rows = [
        [
            name,
            f"{r['batch']} x {r['size']} px",
            f"{r['default']['train']:.3f}",
            f"{r['channels-last']['train']:.3f}",
            f"{r['train_speedup']:.2f}x",
            f"{r['default']['forward']:.3f}",
            f"{r['channels-last']['forward']:.3f}",
            f"{r['forward_speedup']:.2f}x",
            "channels-last" if r["registry_says"] else "default",
        ]
        for name, r in results.items()
    ]
    headers = ["model", "input", "train default", "train NHWC", "ratio", "fwd default", "fwd NHWC", "ratio"]
    print_table([*headers, "dlcv on CPU"], rows)
    path = write_results("layout_bench", {"threads": torch.get_num_threads(), "results": results}, args.json)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

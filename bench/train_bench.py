"""Training throughput and model FLOP utilisation: dlcv's training step against a plain PyTorch loop.

The baseline is what a user would write without dlcv: a Dataset that opens the image files for
every item (Pillow), normalises to float32 in DataLoader workers, and an fp32 loop of forward,
cross-entropy, backward and optimiser step on the same model and device. dlcv's side is its own
LightningModule driven by a Lightning Trainer as ``dlcv segment/classify train`` drives it: data
decoded once and held on the device, dlcv's augmentation run there on each batch, channels-last weights
where dlcv trains in them (every model on a GPU, the registry's choice on a CPU), and on a GPU bf16
autocast and (``--compile``) torch.compile.

Both run alternately (``--rounds`` times, so that other load on the machine hits both alike); the
median step time over all timed steps (after ``--warmup`` steps each round) gives images/s. FLOPs
per step are counted once with ``torch.utils.flop_counter`` (forward + backward) and divided by the
step time and by the device's peak: on CPU the peak is measured here (a large matmul, in bf16 if
dlcv's side runs bf16, else fp32), on a GPU it is the dense bf16 peak of its data sheet (or the
measured one, for unlisted GPUs). The input pipeline's own throughput (batches delivered with no
model) is shown beside the step's. On a machine shared with other jobs, ``--threads 1`` gives
steadier CPU numbers than torch's default of one thread per core.

    python bench/train_bench.py --task segment --data ../shared/hw2_data/p2_data --device cpu
    python bench/train_bench.py --task classify --data ../shared/hw2_data/p1_data --device cpu
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from common import gpu_name, median, print_table, synchronize, write_results
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision.transforms import v2

from dlcv.config import ClassifyConfig, SegmentConfig
from dlcv.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from dlcv.models import build_model
from dlcv.training.runner import optimise_for_device, precision_for
from dlcv.training.task import build_task

#: Dense bf16 tensor-core peaks from the data sheets, FLOP/s, by a fragment of the device name.
GPU_BF16_PEAK = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}
#: Per task: the model, its classes, (CPU, GPU) batch sizes, and the course images' size.
TASKS = {
    "segment": {"model": "fcn8s", "classes": 7, "batch": (1, 16), "size": 512},
    "classify": {"model": "resnet18_cifar", "classes": 50, "batch": (64, 512), "size": 32},
}


# ---- the baseline: a plain PyTorch loop over the image files ------------------------------------------


class PlainSegmentationFiles(Dataset):
    """Each item opens ``ID_sat.jpg`` and ``ID_mask.png``, thresholds the mask as the graders do, flips."""

    CODE_TO_CLASS = np.array([6, 4, 3, 0, 6, 2, 1, 5])

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ids = sorted(name[: -len("_sat.jpg")] for name in os.listdir(folder) if name.endswith("_sat.jpg"))
        self.normalise = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        stem = self.folder / self.ids[index]
        image = np.asarray(Image.open(f"{stem}_sat.jpg").convert("RGB"), dtype=np.float32) / 255.0
        bits = (np.asarray(Image.open(f"{stem}_mask.png").convert("RGB")) >= 128).astype(np.int64)
        mask = torch.from_numpy(self.CODE_TO_CLASS[4 * bits[..., 0] + 2 * bits[..., 1] + bits[..., 2]])
        image = self.normalise(torch.from_numpy(image).permute(2, 0, 1))
        if torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask


class PlainClassificationFiles(Dataset):
    """Each item opens ``LABEL_INDEX.png``: random crop with padding, flip, to float, normalise (the CIFAR recipe)."""

    def __init__(self, folder: Path) -> None:
        self.paths = sorted(p for p in folder.iterdir() if p.suffix == ".png")
        self.transform = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomCrop(32, padding=4),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        return self.transform(Image.open(path).convert("RGB")), int(path.name.split("_")[0])


def plain_optimizer(model: torch.nn.Module, task: str) -> torch.optim.Optimizer:
    config = SegmentConfig() if task == "segment" else ClassifyConfig()
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)


def baseline_steps(model, loader, device, steps: int, task: str) -> list[tuple[float, float]]:
    """The plain fp32 loop; returns each step's wall time (data wait included) and this process's CPU time."""
    model.to(device).train()
    optimizer = plain_optimizer(model, task)
    times, batches = [], cycle(loader)
    started = clock()
    for _ in range(steps):
        images, targets = next(batches)
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        loss = F.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)
        now = clock()
        times.append((now[0] - started[0], now[1] - started[1]))
        started = now
    return times


# ---- dlcv's side: its task, data and augmentation, driven by Lightning ---------------------------------


class StepTimer(L.Callback):
    """Wall and CPU time between the ends of consecutive training steps (data wait included), as the baseline's."""

    def __init__(self) -> None:
        self.ends: list[tuple[float, float]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.ends = [clock()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(pl_module.device)
        self.ends.append(clock())

    @property
    def times(self) -> list[tuple[float, float]]:
        return [tuple(b - a) for a, b in zip(np.array(self.ends[:-1]), np.array(self.ends[1:]), strict=True)]


@dataclass
class DlcvSide:
    """dlcv's task, what ``trainer.fit`` takes with it, its config, its input pipeline and the images' side."""

    task: L.LightningModule
    fit_inputs: dict
    config: SegmentConfig | ClassifyConfig
    batches: Callable[[torch.device], Iterator]
    size: int


def dlcv_segment(data: Path, args, limit: int) -> DlcvSide:
    """SegmentationTask and its on-device data, built as ``dlcv segment train`` builds them (defaults)."""
    from dlcv.data.landcover import LandCoverDataset
    from dlcv.data.transforms import LandCoverAugment
    from dlcv.training.segmentation import SegmentationTask

    config = SegmentConfig(model=args.model, batch_size=args.batch_size, workers=args.workers)
    train_set = LandCoverDataset(data / "train", config.image_size, limit=limit, workers=config.workers)
    size = min(train_set.images.shape[-2:])
    augment = LandCoverAugment(config.crop_size or config.image_size or size, config.min_scale)
    task = build_task(
        SegmentationTask, config, TASKS["segment"]["classes"], False, image_size=config.image_size, loss=config.loss
    )
    return on_device(task, config, train_set.images, train_set.masks, augment, size)


def dlcv_classify(data: Path, args, limit: int) -> DlcvSide:
    """ClassificationTask and its on-device data, built as ``dlcv classify train`` builds them (defaults)."""
    from dlcv.data.batch_augment import BatchAugment
    from dlcv.data.classification import ClassificationDataset
    from dlcv.training.classification import ClassificationTask

    config = ClassifyConfig(model=args.model, batch_size=args.batch_size, workers=args.workers)
    train_set = ClassificationDataset(data / "train_50", None, config.image_size, limit, config.workers)
    augment = BatchAugment(
        TASKS["classify"]["classes"], config.crop_padding, config.flip, config.policy, config.mixup, config.cutmix
    )
    task = build_task(
        ClassificationTask,
        config,
        TASKS["classify"]["classes"],
        False,
        image_size=config.image_size,
        label_smoothing=config.label_smoothing,
    )
    return on_device(task, config, train_set.images, train_set.labels, augment, int(train_set.images.shape[-1]))


def on_device(task, config, images: torch.Tensor, targets: torch.Tensor, augment, size: int) -> DlcvSide:
    """The training set held on the device as dlcv holds it; ``batches`` is its input pipeline alone."""
    from dlcv.training.device_data import DeviceTrainingData

    data = DeviceTrainingData(images, targets, range(0), config.batch_size, 1, config.seed, augment)  # no validation

    def batches(device: torch.device):
        """What the step receives: index batches gathered from the on-device tensors, then augmented there."""
        while True:
            for indices in torch.randperm(len(images), device=device).split(config.batch_size):
                if len(indices) == config.batch_size:
                    yield data.training_batch(indices)

    return DlcvSide(task, {"datamodule": data}, config, batches, size)


def dlcv_steps(task, fit_inputs, config, accelerator: str, steps: int) -> list[tuple[float, float]]:
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # one Trainer per round: no banners
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision_for(config, accelerator),
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        callbacks=[timer],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*|.*val_dataloader.*|.*LeafSpec.*")
        trainer.fit(task, **fit_inputs)
    return timer.times


# ---- measurements ----------------------------------------------------------------------------------------


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds; CPU is this process's, all threads: less swayed by other load than wall time."""
    return time.perf_counter(), time.process_time()


def cycle(loader):
    while True:
        yield from loader


def flops_per_image(model_name: str, classes: int, size: int) -> float:
    """Forward + backward FLOPs of one image through the model, counted on the meta device (no compute)."""
    model = build_model(model_name, classes).to("meta").train()
    images = torch.zeros(1, 3, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        logits = model(images)
        targets = torch.zeros((1, *logits.shape[2:]), dtype=torch.long, device="meta")
        F.cross_entropy(logits, targets).backward()
    return float(counter.get_total_flops())


def peak_flops(device: torch.device, bf16: bool) -> tuple[float, str]:
    """The device's peak FLOP/s and where it comes from: a data sheet (GPU, dense bf16) or measured here
    (CPU: a matmul in bf16 when the comparison uses it, else fp32, so that both sides share one denominator)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, peak in GPU_BF16_PEAK.items():
            if fragment in name:
                return peak, f"{name}: data-sheet dense bf16 peak"
        return matmul_flops(device, torch.bfloat16, 8192), f"{name}: measured bf16 matmul (not in the data-sheet table)"
    dtype = torch.bfloat16 if bf16 else torch.float32
    source = f"measured {str(dtype).removeprefix('torch.')} matmul, {torch.get_num_threads()} threads, best of 2 x 20"
    return matmul_flops(device, dtype, 2048), source


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 20) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def pipeline_rate(batches, device: torch.device, count: int, batch_size: int) -> float:
    """Images/s an input pipeline delivers to ``device`` with no model: its ceiling on training speed."""
    batches = iter(batches)
    next(batches)  # workers started, first batch made
    started = time.perf_counter()
    for _ in range(count):
        images, _ = next(batches)
        images.to(device, non_blocking=True)
    synchronize(device)
    return count * batch_size / (time.perf_counter() - started)


@dataclass
class Side:
    times: list[float]
    cpu_times: list[float]
    pipeline: float


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="segment")
    parser.add_argument("--data", help="p2_data (train/) for segment, p1_data (train_50/) for classify")
    parser.add_argument("--model", help="model name (default: fcn8s / resnet18_cifar)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch-size", type=int, help="default: 1 (segment) / 64 (classify) on CPU, 16 / 512 on GPU")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side and round")
    parser.add_argument("--rounds", type=int, default=4, help="baseline and dlcv alternately, this many times")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, both sides")
    parser.add_argument("--compile", action="store_true", help="dlcv side: torch.compile the model")
    parser.add_argument("--precision", help="dlcv side: a Lightning precision (default dlcv's: bf16-mixed on GPU)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", help="results file (default bench/results/train_bench_TASK_DEVICE.json)")
    parser.add_argument("--generate", type=int, help="train on N generated images of the real size instead of --data")
    parser.add_argument("--smoke", action="store_true", help="tiny generated data, 1 step: checks the script works")
    args = parser.parse_args(argv)
    spec = TASKS[args.task]
    args.model = args.model or spec["model"]
    args.batch_size = args.batch_size or spec["batch"][args.device == "cuda"]
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = spec["size"]
    if args.smoke:
        args.steps, args.warmup, args.rounds, args.workers, args.batch_size = 1, 1, 1, 0, 2
        args.generate, size = 12, min(size, 64)
    if not args.data and not args.generate:
        parser.error("--data or --generate is required (or --smoke)")
    with tempfile.TemporaryDirectory(prefix="dlcv-train-bench-") as tmp:
        if args.generate:
            from dlcv.data.synthetic import make_classification_set, make_landcover_set

            # Throughput depends on the images' size, not their content: generated data of the real
            # size stand in where the course data are not at hand (a GPU machine, CI).
            if args.task == "segment":
                args.data = make_landcover_set(Path(tmp), train=args.generate, validation=1, size=size)
            else:
                per_class = -(-args.generate // spec["classes"])
                args.data = make_classification_set(Path(tmp), spec["classes"], per_class, size, val_per_class=1)
        return run(args, Path(args.data), device)


def run(args, data: Path, device: torch.device) -> int:
    spec = TASKS[args.task]
    per_round = args.warmup + args.steps
    # dlcv decodes its training images once; enough for every step of every round, not the whole set.
    limit = args.batch_size * max(per_round, 4)
    started = time.perf_counter()
    dlcv = (dlcv_segment if args.task == "segment" else dlcv_classify)(data, args, limit)
    decode_s = time.perf_counter() - started
    task, config, size = dlcv.task, dlcv.config, dlcv.size
    plain_set = (
        PlainSegmentationFiles(data / "train")
        if args.task == "segment"
        else PlainClassificationFiles(data / "train_50")
    )
    plain_loader = DataLoader(
        plain_set,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=device.type == "cuda",
    )
    baseline_model = build_model(args.model, spec["classes"])
    baseline_model.load_state_dict(task.model.state_dict())  # the same weights on both sides

    flops = flops_per_image(args.model, spec["classes"], size) * args.batch_size
    config.precision = args.precision or config.precision
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    bf16 = "bf16" in precision_for(config, accelerator)
    peak, peak_source = peak_flops(device, bf16)
    config.compile = args.compile
    optimise_for_device(task, config, accelerator)  # as fit() does: channels-last, TF32, compile if asked
    sides = {"baseline": Side([], [], 0.0), "dlcv": Side([], [], 0.0)}
    for round_ in range(args.rounds):
        order = ["baseline", "dlcv"] if round_ % 2 == 0 else ["dlcv", "baseline"]
        for side in order:
            if side == "baseline":
                times = baseline_steps(baseline_model, plain_loader, device, per_round, args.task)
            else:
                times = dlcv_steps(task, dlcv.fit_inputs, config, accelerator, per_round)
            sides[side].times += [wall for wall, _ in times[args.warmup :]]
            sides[side].cpu_times += [cpu for _, cpu in times[args.warmup :]]
            print(
                f"  round {round_ + 1}/{args.rounds} {side:8s} s/step (wall/CPU): "
                + " ".join(f"{wall:.2f}/{cpu:.2f}" for wall, cpu in times),
                flush=True,
            )
    if device.type == "cpu":  # measured again after the steps: the higher, less hurt by other load, counts
        peak = max(peak, peak_flops(device, bf16)[0])
    pipeline_batches = max(4, min(50, 4 * per_round))
    sides["baseline"].pipeline = pipeline_rate(cycle(plain_loader), device, pipeline_batches, args.batch_size)
    sides["dlcv"].pipeline = pipeline_rate(dlcv.batches(device), device, pipeline_batches, args.batch_size)

    results = {}
    for name, side in sides.items():
        step = median(side.times)
        results[name] = {
            "step_times_s": [round(t, 4) for t in side.times],
            "median_step_s": round(step, 4),
            "cpu_times_s": [round(t, 4) for t in side.cpu_times],
            "median_cpu_s": round(median(side.cpu_times), 4),
            "images_per_s": round(args.batch_size / step, 2),
            "achieved_tflops": round(flops / step / 1e12, 3),
            "mfu": round(flops / step / peak, 4),
            "pipeline_images_per_s": round(side.pipeline, 1),
        }
    speedup = results["dlcv"]["images_per_s"] / results["baseline"]["images_per_s"]
    print()
    print(
        f"{args.task}: {args.model} at {size}x{size}, batch {args.batch_size}, {device.type}"
        f"{' (' + gpu_name() + ')' if device.type == 'cuda' else ''}; {flops / args.batch_size / 1e9:.1f} GFLOP "
        f"per image (forward + backward); peak {peak / 1e12:.2f} TFLOP/s ({peak_source})"
    )
    print(f"median over {len(sides['dlcv'].times)} timed steps per side ({args.rounds} alternating rounds)")
    print_table(
        ["loop", "median step s", "CPU s/step", "images/s", "TFLOP/s", "MFU", "input pipeline images/s"],
        [
            [
                name,
                f"{r['median_step_s']:.3f}",
                f"{r['median_cpu_s']:.3f}",
                f"{r['images_per_s']:.2f}",
                f"{r['achieved_tflops']:.3f}",
                f"{100 * r['mfu']:.1f}%",
                f"{r['pipeline_images_per_s']:.1f}",
            ]
            for name, r in results.items()
        ],
    )
    cpu_ratio = results["baseline"]["median_cpu_s"] / results["dlcv"]["median_cpu_s"]
    print(
        f"\ndlcv / baseline: {speedup:.2f}x images/s ({cpu_ratio:.2f}x in this process's CPU time per step); "
        f"dlcv decoded its {limit} training images in {decode_s:.1f} s (once, before training)"
    )
    path = write_results(
        f"train_bench_{args.task}_{device.type}",
        {
            "task": args.task,
            "model": args.model,
            "image_size": size,
            "batch_size": args.batch_size,
            "device": device.type,
            "gpu": gpu_name() if device.type == "cuda" else None,
            "compile": args.compile,
            "threads": torch.get_num_threads(),
            "workers": args.workers,
            "gflop_per_image": round(flops / args.batch_size / 1e9, 2),
            "peak_tflops": round(peak / 1e12, 3),
            "peak_source": peak_source,
            "decode_once_s": round(decode_s, 2),
            "results": results,
            "speedup": round(speedup, 3),
            "cpu_time_ratio": round(cpu_ratio, 3),
            "precision": precision_for(config, accelerator),
        },
        args.json,
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

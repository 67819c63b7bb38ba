"""FCN-8s prediction throughput: ``dlcv.predict.predict_masks`` against a plain PyTorch loop over the files.

Both read one checkpoint and write one RGB mask PNG per ``*_sat.jpg`` of the input folder. The model
is a real FCN-8s (fc6/fc7 of 4096 channels) with the HED VGG16 backbone. Both run alternately
(``--rounds``), on the same images, in this process. On a CPU an FCN-8s forward pass at 512 x 512
takes seconds, so ``--limit`` times a fixed subset.

    python bench/predict_bench.py --input ../shared/hw2_data/p2_data/validation \\
        --weights ../shared/weights/vgg16_features_hed.safetensors --device cpu --limit 16
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import gpu_name, median, print_table, synchronize, write_results
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from dlcv.data.palette import NUM_CLASSES
from dlcv.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from dlcv.models import build_model, get_entry, load_weights
from dlcv.predict import predict_masks

#: The plain loop's palette, written out as a user would (the course's colours, class order).
PLAIN_COLOURS = np.array(
    [[0, 255, 255], [255, 255, 0], [255, 0, 255], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]], np.uint8
)


class PlainImages(Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.transform = v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return index, self.transform(Image.open(self.paths[index]).convert("RGB"))


def plain_predict(checkpoint: Path, paths: list[Path], out: Path, device: torch.device, batch_size: int, workers: int):
    """The loop a user writes: load the weights, fp32 forward under no_grad, argmax, palette colours, PNG."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model = build_model("fcn8s", NUM_CLASSES)
    model.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
    model.to(device).eval()
    loader = DataLoader(PlainImages(paths), batch_size=batch_size, num_workers=workers)
    with torch.no_grad():
        for indices, images in loader:
            classes = model(images.to(device)).argmax(dim=1).cpu().numpy()
            for index, class_map in zip(indices.tolist(), classes, strict=True):
                name = paths[index].name.replace("_sat.jpg", "_mask.png")
                Image.fromarray(PLAIN_COLOURS[class_map]).save(out / name)


def write_checkpoint(path: Path, weights: str | None) -> None:
    """A dlcv FCN-8s checkpoint (HED backbone when given), read by both sides."""
    from dlcv.training.segmentation import SegmentationTask

    torch.manual_seed(0)
    task = SegmentationTask("fcn8s", NUM_CLASSES)
    if weights:
        load_weights(task.model, weights, get_entry("fcn8s"))
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="folder of ID_sat.jpg images (the validation folder)")
    parser.add_argument("--weights", help="VGG16 backbone weights (the HED .safetensors); default: random")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--limit", type=int, help="time only the first N images (CPU: an FCN-8s image takes seconds)")
    parser.add_argument("--batch-size", type=int, default=4, help="both sides (dlcv's default is 4)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, both sides")
    parser.add_argument("--rounds", type=int, default=3, help="plain and dlcv alternately, this many times")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", help="results file (default bench/results/predict_bench_DEVICE.json)")
    parser.add_argument("--generate", type=int, help="predict N generated 512 x 512 images instead of --input")
    parser.add_argument(
        "--smoke", action="store_true", help="3 small generated images, 1 round: checks the script works"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="dlcv-predict-bench-") as tmp:
        tmp = Path(tmp)
        size = 512
        if args.smoke:
            args.generate, size, args.rounds, args.limit = 3, 64, 1, None
        if args.generate:
            from dlcv.data.synthetic import make_landcover_set

            data = make_landcover_set(tmp / "data", train=0, validation=args.generate, size=size)
            args.input = data / "validation"
        if not args.input:
            parser.error("--input or --generate is required (or --smoke)")
        paths = sorted(Path(args.input).glob("*_sat.jpg"))[: args.limit]
        subset = tmp / "input"
        subset.mkdir()
        for path in paths:
            (subset / path.name).symlink_to(path.resolve())
        checkpoint = tmp / "fcn8s.ckpt"
        write_checkpoint(checkpoint, args.weights)

        # One image each, untimed: page cache, lazy initialisation, cuDNN's algorithm search.
        plain_predict(checkpoint, paths[:1], tmp, device, 1, 0)
        predict_masks(checkpoint, subset, tmp / "warm", device=args.device, batch_size=1, workers=0)
        times: dict[str, list[float]] = {"plain loop": [], "dlcv predict": []}
        for round_ in range(args.rounds):
            order = list(times) if round_ % 2 == 0 else list(times)[::-1]
            for side in order:
                out = tmp / f"{side.replace(' ', '_')}_{round_}"
                out.mkdir()
                started = time.perf_counter()
                if side == "plain loop":
                    plain_predict(checkpoint, paths, out, device, args.batch_size, args.workers)
                else:
                    predict_masks(
                        checkpoint, subset, out, device=args.device, batch_size=args.batch_size, workers=args.workers
                    )
                synchronize(device)
                times[side].append(time.perf_counter() - started)
                print(f"  round {round_ + 1}/{args.rounds} {side:12s} {times[side][-1]:.2f} s", flush=True)
        agree = _agreement(tmp / "plain_loop_0", tmp / "dlcv_predict_0")

    rates = {side: len(paths) / median(values) for side, values in times.items()}
    speedup = rates["dlcv predict"] / rates["plain loop"]
    print()
    where = f"{device.type} ({gpu_name()})" if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"FCN-8s prediction of {len(paths)} images on {where}, batch {args.batch_size}; median of {args.rounds} runs")
    print_table(
        ["loop", "median s", "images/s"],
        [[side, f"{median(values):.2f}", f"{rates[side]:.3f}"] for side, values in times.items()],
    )
    print(f"\ndlcv / plain: {speedup:.2f}x images/s; masks agree on {100 * agree:.3f}% of pixels")
    path = write_results(
        f"predict_bench_{device.type}",
        {
            "images": len(paths),
            "device": device.type,
            "gpu": gpu_name() if device.type == "cuda" else None,
            "threads": torch.get_num_threads(),
            "batch_size": args.batch_size,
            "workers": args.workers,
            "weights": os.fspath(args.weights) if args.weights else None,
            "times_s": {side: [round(t, 3) for t in values] for side, values in times.items()},
            "images_per_s": {side: round(rate, 4) for side, rate in rates.items()},
            "speedup": round(speedup, 3),
            "pixel_agreement": agree,
        },
        args.json,
    )
    print(f"results: {path}")
    return 0


def _agreement(plain_dir: Path, dlcv_dir: Path) -> float:
    """Fraction of pixels where the two sides' masks match (bf16 on a GPU may flip near-ties)."""
    same = total = 0
    for mask in sorted(plain_dir.glob("*.png")):
        a, b = np.asarray(Image.open(mask)), np.asarray(Image.open(dlcv_dir / mask.name).convert("RGB"))
        same += int(np.all(a == b, axis=-1).sum())
        total += a.shape[0] * a.shape[1]
    return same / max(1, total)


if __name__ == "__main__":
    sys.exit(main())

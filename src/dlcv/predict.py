"""Prediction to the graders' file formats, from a checkpoint dlcv wrote."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dlcv.data.images import list_images, read_rgb
from dlcv.data.landcover import IMAGE_TAG, MASK_TAG
from dlcv.data.palette import encode_mask
from dlcv.errors import UserError
from dlcv.files import staged_dir
from dlcv.models import get_entry
from dlcv.training.runner import accelerator_for
from dlcv.training.task import Task


def task_classes() -> dict[str, type[Task]]:
    from dlcv.training.segmentation import SegmentationTask

    return {"segment": SegmentationTask}


def load_task(checkpoint: str | Path, task: str) -> Task:
    """The trained task in a Lightning checkpoint, in eval mode on the CPU."""
    path = Path(checkpoint)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        hparams = dict(state["hyper_parameters"])
        weights = state["state_dict"]
    except Exception as exc:
        raise UserError(f"{path}: not a dlcv checkpoint ({str(exc).splitlines()[0][:120]})") from None
    entry = get_entry(str(hparams.get("model")))
    if entry.task != task:
        raise UserError(f"{path}: a {entry.task} checkpoint, where a {task} one is needed")
    model = task_classes()[task](**hparams)
    model.load_state_dict(weights)
    return model.eval()


def device_for(device: str) -> torch.device:
    return torch.device("cuda" if accelerator_for(device) == "gpu" else "cpu")


def segmentation_inputs(folder: str | Path) -> list[Path]:
    """The images to segment: the ``*_sat`` ones if the folder has any (it may hold masks too), else all."""
    images = list_images(folder)
    satellite = [p for p in images if p.stem.endswith(IMAGE_TAG)]
    return satellite or [p for p in images if not p.stem.endswith(MASK_TAG)]


def mask_name(image: Path) -> str:
    stem = image.stem[: -len(IMAGE_TAG)] if image.stem.endswith(IMAGE_TAG) else image.stem
    return f"{stem}{MASK_TAG}.png"


class _ImageFiles(Dataset):
    def __init__(self, paths: list[Path], image_size: int | None) -> None:
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, tuple[int, int]]:
        image = read_rgb(self.paths[index])
        size = image.shape[:2]
        if self.image_size is not None:
            image = np.array(Image.fromarray(image).resize((self.image_size, self.image_size), Image.BILINEAR))
        return index, torch.from_numpy(image).permute(2, 0, 1).contiguous(), size


def predict_masks(
    checkpoint: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    device: str = "auto",
    batch_size: int = 4,
    workers: int = 2,
) -> int:
    """Write ``ID_mask.png`` (RGB, the image's own size, palette colours only) for every input image."""
    paths = segmentation_inputs(input_dir)
    task = load_task(checkpoint, "segment")
    target = device_for(device)
    task.to(target)
    loader = DataLoader(
        _ImageFiles(paths, task.hparams.get("image_size")),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=target.type == "cuda")
    with staged_dir(output_dir) as stage, torch.inference_mode(), autocast:
        for batch in loader:
            groups = defaultdict(list)  # images of one size run as one batch
            for index, image, size in batch:
                groups[(tuple(image.shape), size)].append((index, image))
            for (_, size), items in groups.items():
                images = torch.stack([image for _, image in items]).to(target)
                classes = task.predict_logits(images, size).argmax(dim=1).to(torch.uint8).cpu().numpy()
                for (index, _), class_map in zip(items, classes, strict=True):
                    Image.fromarray(encode_mask(class_map)).save(stage / mask_name(paths[index]), compress_level=1)
    return len(paths)

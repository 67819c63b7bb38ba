"""Prediction to the graders' file formats, from a checkpoint dlcv wrote."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dlcv.data.images import list_images, read_rgb, resize_square
from dlcv.data.landcover import IMAGE_TAG, MASK_TAG
from dlcv.data.palette import encode_mask
from dlcv.errors import UserError, abbreviate
from dlcv.files import staged_dir
from dlcv.models import get_entry, runs_channels_last
from dlcv.training.runner import accelerator_for
from dlcv.training.task import Task, read_checkpoint


def task_classes() -> dict[str, type[Task]]:
    from dlcv.training.classification import ClassificationTask
    from dlcv.training.segmentation import SegmentationTask

    return {"segment": SegmentationTask, "classify": ClassificationTask}


def load_task(checkpoint: str | Path, task: str) -> Task:
    """The trained task in a Lightning checkpoint, in eval mode on the CPU."""
    hparams, weights = read_checkpoint(checkpoint)
    entry = get_entry(str(hparams["model"]))
    if entry.task != task:
        raise UserError(f"{checkpoint}: a {entry.task} checkpoint, where a {task} one is needed")
    model = task_classes()[task](**hparams)
    model.load_state_dict(weights)
    return model.eval()


def device_for(device: str) -> torch.device:
    return torch.device("cuda" if accelerator_for(device) == "gpu" else "cpu")


@contextmanager
def inference_on(task: Task, device: torch.device) -> Iterator[None]:
    """Inference as training ran: ``task`` on ``device``, no autograd, channels-last weights where
    :func:`runs_channels_last` says (every model on a GPU), and bf16 autocast on a GPU."""
    task.to(device)
    on_gpu = device.type == "cuda"
    if runs_channels_last(task.hparams.model, on_gpu):
        task.to(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
        yield


def segmentation_inputs(folder: str | Path) -> list[Path]:
    """The images to segment: the ``*_sat`` ones if the folder has any (it may hold masks too), else all."""
    images = list_images(folder)
    inputs = [p for p in images if p.stem.endswith(IMAGE_TAG)] or [p for p in images if not p.stem.endswith(MASK_TAG)]
    by_mask: dict[str, Path] = {}
    for path in inputs:
        other = by_mask.setdefault(mask_name(path), path)
        if other != path:
            raise UserError(f"{path}: its mask would be {mask_name(path)}, as would {other.name}'s")
    return inputs


def mask_name(image: Path) -> str:
    stem = image.stem[: -len(IMAGE_TAG)] if image.stem.endswith(IMAGE_TAG) else image.stem
    return f"{stem}{MASK_TAG}.png"


class _ImageFiles(Dataset):
    def __init__(self, paths: list[Path], image_size: int | None) -> None:
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | UserError, tuple[int, int]]:
        try:
            image = read_rgb(self.paths[index])
        except UserError as exc:  # raised in the main process: from a worker it would carry a traceback
            return index, exc, (0, 0)
        size = image.shape[:2]
        image = resize_square(image, self.image_size)
        return index, torch.from_numpy(image).permute(2, 0, 1).contiguous(), size


#: Test-time augmentation views: (quarter turns, then a left-right flip). "flips" is the identity,
#: the horizontal and the vertical flip and both; "d4" adds the 90-degree turns (aerial images have no "up").
TTA_VIEWS = {
    "none": ((0, False),),
    "flips": ((0, False), (0, True), (2, True), (2, False)),
    "d4": tuple((turns, flip) for turns in range(4) for flip in (False, True)),
}
#: Scales of the model's input size that ``--tta`` averages over unless told otherwise.
TTA_SCALES = (0.75, 1.0, 1.25)


def check_tta(views: str, scales: Sequence[float]) -> None:
    if views not in TTA_VIEWS:
        raise UserError(f"--tta {views}: choose one of {', '.join(TTA_VIEWS)}")
    if not scales or not all(0 < scale <= 8 for scale in scales):
        raise UserError(f"--tta-scales {' '.join(map(str, scales))}: scales must lie in (0, 8]")


def segment_probabilities(
    task: Task, images: torch.Tensor, size: tuple[int, int], views: str = "none", scales: Sequence[float] = (1.0,)
) -> torch.Tensor:
    """Softmax probabilities at ``size``, averaged over flipped/turned views of the images at each scale.

    Each view's scores are turned back before the softmax, and every view is scored at the output
    size, so views of any scale average pixel by pixel. No views and scale 1 is plain prediction.
    """
    height, width = images.shape[-2:]
    total = torch.zeros(())
    for scale in scales:
        scaled = images
        if scale != 1:
            shape = (max(1, round(height * scale)), max(1, round(width * scale)))
            scaled = F.interpolate(images.float(), size=shape, mode="bilinear", align_corners=False, antialias=True)
        for turns, flip in TTA_VIEWS[views]:
            view = torch.rot90(scaled, turns, dims=(-2, -1))
            view = view.flip(-1) if flip else view
            logits = task.predict_logits(view, size if turns % 2 == 0 else size[::-1])
            logits = logits.flip(-1) if flip else logits
            total = total + torch.rot90(logits, -turns, dims=(-2, -1)).float().softmax(dim=1)
    return total / (len(scales) * len(TTA_VIEWS[views]))


def iter_class_maps(
    task: Task,
    paths: list[Path],
    device: str = "auto",
    batch_size: int = 4,
    workers: int = 2,
    tta: str = "none",
    tta_scales: Sequence[float] = (1.0,),
) -> Iterator[tuple[Path, np.ndarray]]:
    """(image path, H x W uint8 class map at the image's own size) for each path, batch by batch.

    ``tta`` names views of :data:`TTA_VIEWS` and ``tta_scales`` the input scales to average over.
    """
    check_tta(tta, tta_scales)
    target = device_for(device)
    loader = DataLoader(
        _ImageFiles(paths, task.hparams.get("image_size")),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,
    )
    with inference_on(task, target):
        for batch in loader:
            groups = defaultdict(list)  # images of one size run as one batch
            for index, image, size in batch:
                if isinstance(image, UserError):
                    raise image
                groups[(tuple(image.shape), size)].append((index, image))
            for (_, size), items in groups.items():
                images = torch.stack([image for _, image in items]).to(target)
                probabilities = segment_probabilities(task, images, size, tta, tta_scales)
                classes = probabilities.argmax(dim=1).to(torch.uint8).cpu().numpy()
                for (index, _), class_map in zip(items, classes, strict=True):
                    yield paths[index], class_map


def predict_masks(
    checkpoint: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    device: str = "auto",
    batch_size: int = 4,
    workers: int = 2,
    tta: str = "none",
    tta_scales: Sequence[float] = (1.0,),
) -> int:
    """Write ``ID_mask.png`` (RGB, the image's own size, palette colours only) for every input image.

    With test-time augmentation (``tta``, ``tta_scales``: see :func:`iter_class_maps`) the masks are
    the argmax of the views' averaged probabilities.
    """
    check_tta(tta, tta_scales)
    paths = segmentation_inputs(input_dir)
    if Path(output_dir).resolve() == Path(input_dir).resolve():
        masks = [name for name in map(mask_name, paths) if (Path(input_dir) / name).exists()]
        if masks:
            raise UserError(f"{output_dir}: the input folder, whose masks predict would overwrite: {abbreviate(masks)}")
    task = load_task(checkpoint, "segment")
    with staged_dir(output_dir) as stage:
        for path, class_map in iter_class_maps(task, paths, device, batch_size, workers, tta, tta_scales):
            Image.fromarray(encode_mask(class_map)).save(stage / mask_name(path), compress_level=1)
    return len(paths)


# ---- classification ----------------------------------------------------------------------------------


def iter_logits(
    task: Task, images: torch.Tensor, device: torch.device, batch_size: int = 256
) -> Iterator[torch.Tensor]:
    """Class scores of a uint8 N x 3 x H x W tensor, batch by batch, on ``device``."""
    with inference_on(task, device):
        for start in range(0, len(images), batch_size):
            yield task(images[start : start + batch_size].to(device))


def classify_images(task: Task, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> np.ndarray:
    """The predicted class of every image of a uint8 N x 3 x H x W tensor."""
    return np.concatenate(
        [logits.argmax(dim=1).cpu().numpy() for logits in iter_logits(task, images, device, batch_size)]
    )


def check_labels_fit(paths: list[Path], task: Task, checkpoint: str | Path) -> None:
    """Where the file names carry labels, an error if one lies beyond the classes the model was trained for."""
    from dlcv.data.labels import label_of

    num_classes = int(task.hparams.num_classes)
    for path in paths:
        label = label_of(path)
        if label is not None and label >= num_classes:
            raise UserError(f"{checkpoint}: the model knows {num_classes} classes, but {path} is labelled {label}")


def predict_labels(
    checkpoint: str | Path,
    input_dir: str | Path,
    output_csv: str | Path,
    device: str = "auto",
    batch_size: int = 256,
    workers: int = 2,
) -> int:
    """Write the graders' CSV (``image_id,label``, sorted by file name) for every image of a folder."""
    from dlcv.data.classification import decode_images
    from dlcv.data.labels import write_label_csv

    paths = list_images(input_dir)
    task = load_task(checkpoint, "classify")
    check_labels_fit(paths, task, checkpoint)
    images = decode_images(paths, task.hparams.get("image_size"), workers)
    write_label_csv(output_csv, [p.name for p in paths], classify_images(task, images, device_for(device), batch_size))
    return len(paths)

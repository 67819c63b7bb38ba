"""t-SNE of a trained classifier's features: the report's figure, and its 2-D points as CSV.

Features are one layer's outputs, caught by a forward hook: by default the model's penultimate
layer (its ``feature_layer``: for vgg16_bn the 256 units after their ReLU), or any named module.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from dlcv.errors import UserError
from dlcv.files import atomic_path, write_text_atomic

#: Ten colours times five markers: fifty classes, each a distinct (colour, marker) pair.
MARKERS = ("o", "s", "^", "D", "v")
MIN_IMAGES = 5


def class_style(label: int) -> tuple[tuple[float, ...], str]:
    """(colour, marker) of a class: colour ``label % 10`` of tab10, marker ``label // 10`` (cycling)."""
    return plt.get_cmap("tab10")(label % 10), MARKERS[(label // 10) % len(MARKERS)]


def layer_features(
    task, images: torch.Tensor, layer: str | None, device: torch.device, batch_size: int = 256
) -> tuple[str, np.ndarray]:
    """(layer name, N x D features) of ``layer`` (default: the model's penultimate layer) for each image."""
    from dlcv.predict import iter_logits

    model = task.model
    layer = layer or getattr(model, "feature_layer", None)
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        names = [name for name in modules if name]
        raise UserError(f"--layer {layer}: no such layer in {task.hparams.model}; some layers: {', '.join(names[-8:])}")
    caught: list[torch.Tensor] = []
    hook = modules[layer].register_forward_hook(
        lambda module, inputs, output: caught.append(output.detach().flatten(1).float().cpu().clone())
    )
    try:
        for _ in iter_logits(task, images, device, batch_size):
            pass
    finally:
        hook.remove()
    return layer, torch.cat(caught).numpy()


def embed(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of N x D features (PCA to 50 dimensions first when D is larger, as usual)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if features.shape[1] > 50:
        features = PCA(n_components=min(50, len(features)), random_state=seed).fit_transform(features)
    perplexity = min(30.0, (len(features) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def tsne_figure(points: np.ndarray, labels: np.ndarray, title: str) -> Figure:
    """Each class in its own colour and marker, with a legend beside the axes."""
    classes = sorted({int(label) for label in labels})
    figure, axis = plt.subplots(figsize=(11, 8))
    for label in classes:
        colour, marker = class_style(label)
        chosen = labels == label
        axis.scatter(points[chosen, 0], points[chosen, 1], s=10, color=colour, marker=marker, label=str(label))
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    columns = 1 + (len(classes) - 1) // 25
    axis.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1), ncol=columns, fontsize=7, markerscale=1.5)
    figure.tight_layout()
    return figure


def write_tsne(
    checkpoint: str | Path,
    input_dir: str | Path,
    output: str | Path,
    layer: str | None = None,
    truth: str | Path | None = None,
    device: str = "auto",
    workers: int = 2,
) -> tuple[Path, Path]:
    """t-SNE of the images in ``input_dir`` into ``output`` (PNG), points into ``output`` with ``.csv``.

    Labels come from the file names (``<label>_<index>``) or from ``truth`` (a folder or CSV).
    """
    from dlcv.data.classification import decode_images
    from dlcv.data.images import list_images
    from dlcv.data.labels import ground_truth, match_names, parse_label
    from dlcv.predict import check_labels_fit, device_for, load_task

    output = Path(output)
    if output.suffix.lower() != ".png":
        raise UserError(f"{output}: the t-SNE figure is a PNG file (FILE.png; its points go beside it as FILE.csv)")
    points_csv = output.with_suffix(".csv")
    paths = list_images(input_dir)
    if len(paths) < MIN_IMAGES:
        raise UserError(f"{input_dir}: t-SNE needs at least {MIN_IMAGES} images, found {len(paths)}")
    if truth is None:
        labels = np.array([parse_label(p) for p in paths])
    else:
        table = ground_truth(truth)
        match_names(table, [p.name for p in paths], truth, input_dir)
        labels = np.array([table[p.name] for p in paths])
    task = load_task(checkpoint, "classify")
    check_labels_fit(paths, task, checkpoint)
    images = decode_images(paths, task.hparams.get("image_size"), workers)
    layer, features = layer_features(task, images, layer, device_for(device))
    points = embed(features)
    figure = tsne_figure(points, labels, f"t-SNE of {task.hparams.model} layer {layer} ({len(paths)} images)")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["x", "y", "label", "image_id", "layer"])
    writer.writerows(
        (f"{x:.5f}", f"{y:.5f}", int(label), path.name, layer)
        for (x, y), label, path in zip(points, labels, paths, strict=True)
    )
    with atomic_path(output) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    write_text_atomic(points_csv, buffer.getvalue())
    return output, points_csv

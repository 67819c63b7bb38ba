"""``dlcv demo``: the whole tool on generated data, in minutes on a laptop CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dlcv.config import SegmentConfig


def run_demo(out: str | Path) -> Iterator[str]:
    """Generate a land-cover set, train FCN-8s on it, predict, score and draw; yield progress lines."""
    from dlcv.data.synthetic import make_landcover_set
    from dlcv.metrics import evaluate_mask_folders
    from dlcv.predict import predict_masks
    from dlcv.training.segmentation import train_segmentation
    from dlcv.viz.masks import write_mask_figures

    out = Path(out)
    data = make_landcover_set(out / "data" / "landcover", train=64, validation=16, size=64)
    yield f"generated land-cover data in {data}"
    run = out / "runs" / "fcn8s"
    config = SegmentConfig(
        data=str(data),
        out=str(run),
        model="fcn8s",
        epochs=6,
        batch_size=8,
        device="cpu",
        workers=0,
        snapshot_ids=["0000", "0001", "0002"],
        model_kwargs={"fc_channels": 512},
    )
    summary = train_segmentation(config, overwrite=True)
    yield f"trained fcn8s: best val mIoU {summary.best_score:.4f} in {summary.wall_s:.0f} s ({run})"
    predictions = out / "predictions" / "fcn8s"
    count = predict_masks(summary.best_checkpoint, data / "validation", predictions, device="cpu")
    yield f"predicted {count} masks into {predictions}"
    score = evaluate_mask_folders(predictions, data / "validation")
    yield "graders' score of the predictions:\n" + score.grader_text().rstrip()
    for figure in write_mask_figures(
        data / "validation", [predictions, run], ["0000", "0001", "0002"], out / "figures"
    ):
        yield f"figure: {figure}"

"""``dlcv demo``: the whole tool on generated data, in minutes on a laptop CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dlcv.config import ClassifyConfig, SegmentConfig

#: The generated validation images whose masks the demo shows (as 0010, 0097 and 0107 are for the course data).
DEMO_IDS = ["0000", "0001", "0002"]


def run_demo(out: str | Path, command: str = "dlcv demo") -> Iterator[str]:
    """Both tasks on generated data: train FCN-8s and FCN-32s, predict, score and draw; train a small
    classifier and score it; then the HTML report of all three runs (their run.json name ``command``). Yields
    progress lines."""
    from dlcv.data.synthetic import make_classification_set, make_landcover_set
    from dlcv.metrics import evaluate_label_csv, evaluate_mask_folders
    from dlcv.predict import predict_masks
    from dlcv.report import write_report
    from dlcv.training.classification import VAL_PREDICTIONS, train_classification
    from dlcv.training.segmentation import train_segmentation
    from dlcv.viz.masks import write_mask_figures

    out = Path(out)
    data = make_landcover_set(out / "data" / "landcover", train=64, validation=16, size=64)
    yield f"generated land-cover data in {data}"
    runs = []
    for model, epochs in (("fcn8s", 6), ("fcn32s", 3)):
        config = SegmentConfig(
            data=str(data),
            out=str(out / "runs" / model),
            model=model,
            epochs=epochs,
            batch_size=8,
            device="cpu",
            workers=0,
            snapshot_ids=DEMO_IDS,
            model_kwargs={"fc_channels": 512},
        )
        summary = train_segmentation(config, command, overwrite=True)
        runs.append(summary.run_dir)
        yield f"trained {model}: best val mIoU {summary.best_score:.4f} in {summary.wall_s:.0f} s ({summary.run_dir})"
    predictions = out / "predictions" / "fcn8s"
    count = predict_masks(runs[0] / "best.ckpt", data / "validation", predictions, device="cpu")
    yield f"predicted {count} masks into {predictions}"
    score = evaluate_mask_folders(predictions, data / "validation")
    yield "graders' score of the predictions:\n" + score.grader_text().rstrip()
    for figure in write_mask_figures(data / "validation", [predictions, runs[0]], DEMO_IDS, out / "figures"):
        yield f"figure: {figure}"

    # 16 x 16 images keep the small ResNet's CPU time to seconds; the shapes still tell the classes apart.
    images = make_classification_set(
        out / "data" / "classification", classes=10, per_class=24, size=16, val_per_class=10
    )
    yield f"generated classification data in {images}"
    config = ClassifyConfig(
        data=str(images),
        out=str(out / "runs" / "resnet20_cifar"),
        model="resnet20_cifar",
        epochs=5,
        batch_size=24,
        device="cpu",
        workers=0,
    )
    summary = train_classification(config, command, overwrite=True)
    runs.append(summary.run_dir)
    accuracy = evaluate_label_csv(summary.run_dir / VAL_PREDICTIONS, images / "val_gt.csv")
    yield (
        f"trained resnet20_cifar: validation accuracy {100 * accuracy.accuracy:.2f}% "
        f"({accuracy.correct}/{accuracy.total}) in {summary.wall_s:.0f} s ({summary.run_dir})"
    )
    yield f"report: {write_report(runs, out / 'report.html', DEMO_IDS)}"

"""The ``dlcv`` command: argument parsing and printing over the library, nothing more.

User errors (``UserError``) become one line ``error: ...`` and exit status 2. Heavy imports
(torch, Lightning) happen inside the commands that need them, so ``dlcv segment eval`` stays light.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dlcv
from dlcv.config import DEVICES, OPTIMIZERS, SCHEDULES, ClassifyConfig, SegmentConfig, TrainConfig
from dlcv.errors import UserError, counted

if TYPE_CHECKING:
    from dlcv.metrics import SegmentationScore
    from dlcv.results import Result

log = logging.getLogger("dlcv")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``error:`` line (exit 2) like every other user error."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


class _LevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno == logging.INFO else f"{record.levelname.lower()}: {message}"


def _positive_int(text: str) -> int:
    """argparse type of counts: a whole number, 1 or more."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: not a positive integer")
    return int(text)


# ---- shared option groups -------------------------------------------------------------------------


def _add_train_options(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """Options of every ``train`` command; they parse to None so that only given flags override the
    config, and their help shows the task's built-in ``defaults``."""

    def default(name: str) -> str:
        return f"(default {getattr(defaults, name)})"

    parser.add_argument("--data", help="data folder")
    parser.add_argument("--model", help=f"model name, see `dlcv describe --list` {default('model')}")
    parser.add_argument("--out", help="run folder to create (checkpoints, metrics.csv, config.yaml)")
    parser.add_argument(
        "--config",
        action="append",
        help="YAML file of options, or a preset's name (report_fcn8s ...); repeat it to layer files (a later one "
        "wins); its values replace the defaults shown here, and flags given here override them all",
    )
    parser.add_argument("--epochs", type=int, help=default("epochs"))
    parser.add_argument("--batch-size", type=int, help=f"images per batch and process {default('batch_size')}")
    parser.add_argument("--lr", type=float, help=f"peak learning rate {default('lr')}")
    parser.add_argument("--weight-decay", type=float, help=default("weight_decay"))
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help=default("optimizer"))
    parser.add_argument("--schedule", choices=SCHEDULES, help=f"learning-rate schedule {default('schedule')}")
    parser.add_argument("--image-size", type=int, help="resize images to S x S once at load (default: native)")
    parser.add_argument(
        "--weights", help=f"imagenet, none, or a state-dict file (.pth/.safetensors) {default('weights')}"
    )
    parser.add_argument("--seed", type=int, help=default("seed"))
    parser.add_argument("--device", choices=DEVICES, help=f"auto: a GPU where there is one {default('device')}")
    parser.add_argument("--devices", type=int, help=f"processes (GPUs) per machine, data-parallel {default('devices')}")
    parser.add_argument("--num-nodes", type=int, help=f"machines, data-parallel {default('num_nodes')}")
    parser.add_argument(
        "--precision",
        help=f"32-true, bf16-mixed, 16-mixed; auto: bf16-mixed on a GPU, else 32-true {default('precision')}",
    )
    parser.add_argument(
        "--workers", type=int, help=f"processes that decode the data once, at load {default('workers')}"
    )
    parser.add_argument("--limit-train", type=int, help="use only N training items (quick runs)")
    parser.add_argument("--limit-val", type=int, help="use only N validation items")
    parser.add_argument("--deterministic", action="store_true", default=None, help="deterministic GPU kernels")
    parser.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (GPU runs)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from last.ckpt")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")


def _add_checkpoint_options(parser: argparse.ArgumentParser, output: str) -> None:
    """What every command that runs a trained model on a folder of images takes."""
    parser.add_argument("--checkpoint", required=True, help="a trained model: a run's best.ckpt or last.ckpt")
    parser.add_argument("--input", required=True, help="folder of images")
    parser.add_argument("--output", required=True, help=output)
    parser.add_argument(
        "--device", default="auto", choices=DEVICES, help="auto: a GPU where there is one (default auto)"
    )


def _add_scoring_options(parser: argparse.ArgumentParser, truth: str) -> None:
    """What every predict takes to score its predictions at once, and to publish that score."""
    parser.add_argument("--gt", help=f"{truth}: score the predictions against it and print the score as eval does")
    parser.add_argument(
        "--results",
        metavar="CSV",
        help="with --gt: also write the score as a results.csv row for `dlcv results publish` "
        "(the checkpoint must lie in its finished run folder)",
    )
    parser.add_argument("--split", default="validation", help="the split --gt holds, for the row (default validation)")


def _score_row(args: argparse.Namespace, check_truth: Callable[[Path], None]) -> Result | None:
    """The row ``--results`` will hold, all but its score, where it wants one. The scoring options are checked
    (the ground truth read, and matched to the inputs, by ``check_truth``) before predicting, so that a mistake
    in them writes nothing, and the row names the source and device as the prediction starts."""
    from dlcv.files import refuse_folder
    from dlcv.results import prediction_result, run_result
    from dlcv.training.runner import accelerator_for, device_name

    if args.gt is None:
        if args.results:
            raise UserError("--results needs --gt, the ground truth to score against")
        return None
    if not Path(args.gt).exists():
        raise UserError(f"{args.gt}: no such file or folder")
    check_truth(Path(args.gt))
    if not args.results:
        return None
    refuse_folder(args.results)
    run = run_result(Path(args.checkpoint).parent)
    return prediction_result(run, args.split, args.command_line, device_name(accelerator_for(args.device)))


def _write_score_row(args: argparse.Namespace, row: Result, value: float) -> None:
    from dlcv.results import write_results

    print(f"wrote the score's row to {write_results(args.results, [row.scored(value)])}")


def _resolve_train_config(cls, args: argparse.Namespace):
    import dataclasses

    from dlcv.config import CONFIG_NAME, resolve_config

    config_files = args.config or []
    if args.resume and not config_files and args.out:
        own_config = Path(args.out) / CONFIG_NAME  # a resumed run keeps its own configuration
        if not own_config.is_file():
            raise UserError(f"{args.out}: nothing to resume (no {CONFIG_NAME})")
        config_files = [own_config]
    fields = {f.name for f in dataclasses.fields(cls)}
    config = resolve_config(cls, config_files, {k: v for k, v in vars(args).items() if k in fields})
    for name in ("data", "out"):
        if not getattr(config, name):
            raise UserError(f"--{name} is required (on the command line or in --config)")
    return config


def _print_summary(summary) -> None:
    if not summary.is_global_zero:  # the other processes of a multi-process run stay quiet
        return
    score = "n/a" if summary.best_score is None else f"{summary.best_score:.4f}"
    print(f"best {summary.monitor}: {score} ({summary.best_checkpoint})")
    print(f"run folder: {summary.run_dir}  epochs: {summary.epochs}  wall time: {summary.wall_s:.1f} s")


# ---- segment ----------------------------------------------------------------------------------------


def _segment_train(args: argparse.Namespace) -> None:
    from dlcv.training.segmentation import train_segmentation

    if args.class_weights is not None:
        args.class_weights = _parse_class_weights(args.class_weights)
    config = _resolve_train_config(SegmentConfig, args)
    _print_summary(train_segmentation(config, args.command_line, resume=args.resume, overwrite=args.overwrite))


def _parse_class_weights(tokens: Sequence[str]) -> list[float] | dict[str, float]:
    """``rangeland=1.5`` (others 1) or one number per class, as a config's ``class_weights`` takes them."""
    try:
        if all("=" in token for token in tokens):
            return {name: float(weight) for name, weight in (token.split("=", 1) for token in tokens)}
        return [float(token) for token in tokens]
    except ValueError:
        given = " ".join(tokens)
        raise UserError(f"--class-weights {given}: give CLASS=WEIGHT pairs or one number per class") from None


def _segment_predict(args: argparse.Namespace) -> None:
    from dlcv.metrics import check_masks_predictable, evaluate_mask_folders
    from dlcv.predict import TTA_SCALES, mask_name, predict_masks, segmentation_inputs

    def check_truth(gt: Path) -> None:
        check_masks_predictable(gt, map(mask_name, segmentation_inputs(args.input)), args.input)

    row = _score_row(args, check_truth)
    views = args.tta or "none"
    scales = args.tta_scales or (TTA_SCALES if args.tta else (1.0,))
    count = predict_masks(
        args.checkpoint,
        args.input,
        args.output,
        device=args.device,
        batch_size=args.batch_size,
        tta=views,
        tta_scales=scales,
    )
    print(f"wrote {counted(count, 'mask')} to {args.output}")
    if args.gt is not None:
        score = evaluate_mask_folders(args.output, args.gt)
        _print_segment_score(score)
        if row is not None:
            _write_score_row(args, row, score.miou)


def _segment_eval(args: argparse.Namespace) -> None:
    from dlcv.metrics import evaluate_mask_folders

    _print_segment_score(evaluate_mask_folders(args.pred, args.gt, workers=args.workers), args.json)


def _print_segment_score(score: SegmentationScore, as_json: bool = False) -> None:
    """The graders' text (or JSON) of a score, after warnings about what it could not score as they would."""
    for side, off in (("ground-truth", score.off_palette_truth), ("predicted", score.off_palette_predicted)):
        if off.pixels:
            log.warning(
                "%d pixels in %d %s masks are off-palette; mapped by the graders' threshold rule (first: %s)",
                off.pixels,
                len(off.masks),
                side,
                off.masks[0],
            )
    if score.unused_predictions:
        log.warning(
            "%d predictions have no ground truth and were not scored (first: %s)",
            len(score.unused_predictions),
            score.unused_predictions[0],
        )
    print(score.to_json() if as_json else score.grader_text(), end="\n" if as_json else "")


def _segment_viz(args: argparse.Namespace) -> None:
    from dlcv.viz.masks import write_mask_figures

    for path in write_mask_figures(args.data, args.pred, args.ids, args.out):
        print(path)


def _add_group(commands, name: str, summary: str):
    """A command that is a group of commands (``dlcv segment train``): usage says COMMAND, as at the top."""
    return commands.add_parser(name, help=summary).add_subparsers(metavar="COMMAND", required=True)


def _add_segment(commands) -> None:
    segment = _add_group(commands, "segment", "land-cover segmentation")

    train = segment.add_parser("train", help="train a segmentation model")
    _add_train_options(train, SegmentConfig())
    train.add_argument("--crop-size", type=int, help="training crop side (default: the image size)")
    train.add_argument(
        "--scale-range",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="multi-scale training: zoom each crop by a factor drawn from [LOW, HIGH] (1 1: one scale)",
    )
    train.add_argument(
        "--loss", help=f"ce, dice, lovasz, lovasz_image, or a sum such as ce+lovasz (default {SegmentConfig.loss})"
    )
    train.add_argument(
        "--class-weights", nargs="+", metavar="W", help="loss weights: rangeland=1.5 (others 1), or one per class"
    )
    train.set_defaults(handler=_segment_train)

    predict = segment.add_parser("predict", help="write NNNN_mask.png for each image of a folder")
    _add_checkpoint_options(predict, "folder for the masks")
    predict.add_argument("--batch-size", type=_positive_int, default=4, help="images per batch (default 4)")
    predict.add_argument(
        "--tta",
        nargs="?",
        const="flips",
        choices=["flips", "d4"],
        help="test-time augmentation: average the probabilities over flips (or all 8 flips and turns: d4) "
        "at scales 0.75, 1, 1.25",
    )
    predict.add_argument("--tta-scales", nargs="+", type=float, help="scales of the input size to average over")
    _add_scoring_options(predict, "folder of ground-truth masks")
    predict.set_defaults(handler=_segment_predict)

    evaluate = segment.add_parser("eval", help="the graders' mean IoU of a folder of predicted masks")
    evaluate.add_argument("--pred", required=True, help="folder of predicted masks")
    evaluate.add_argument("--gt", required=True, help="folder of ground-truth masks (every .png in it)")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of the graders' text")
    evaluate.add_argument("--workers", type=_positive_int, default=None, help="processes (default: all cores)")
    evaluate.set_defaults(handler=_segment_eval)

    viz = segment.add_parser("viz", help="figures: image | ground truth | predictions, overlays, progress")
    viz.add_argument("--data", required=True, help="folder with ID_sat.jpg and ID_mask.png")
    viz.add_argument("--pred", nargs="+", default=[], help="prediction folders or run folders")
    viz.add_argument("--ids", nargs="+", help="image ids (default 0010 0097 0107 where present)")
    viz.add_argument("--out", required=True, help="folder for the figures")
    viz.set_defaults(handler=_segment_viz)


# ---- classify ---------------------------------------------------------------------------------------


def _classify_train(args: argparse.Namespace) -> None:
    from dlcv.training.classification import train_classification

    config = _resolve_train_config(ClassifyConfig, args)
    _print_summary(train_classification(config, args.command_line, resume=args.resume, overwrite=args.overwrite))


def _classify_predict(args: argparse.Namespace) -> None:
    from dlcv.data.images import list_images
    from dlcv.data.labels import ground_truth, match_names
    from dlcv.metrics import evaluate_label_csv
    from dlcv.predict import predict_labels

    def check_truth(gt: Path) -> None:
        match_names(ground_truth(gt), [path.name for path in list_images(args.input)], gt, args.input)

    row = _score_row(args, check_truth)
    count = predict_labels(args.checkpoint, args.input, args.output, device=args.device, batch_size=args.batch_size)
    print(f"wrote {counted(count, 'prediction')} to {args.output}")
    if args.gt is not None:
        score = evaluate_label_csv(args.output, args.gt)
        print(score.text(), end="")
        if row is not None:
            _write_score_row(args, row, score.accuracy)


def _classify_eval(args: argparse.Namespace) -> None:
    from dlcv.metrics import evaluate_label_csv

    score = evaluate_label_csv(args.pred, args.gt)
    print(score.to_json() if args.json else score.text(), end="\n" if args.json else "")


def _classify_tsne(args: argparse.Namespace) -> None:
    from dlcv.viz.tsne import write_tsne

    for path in write_tsne(args.checkpoint, args.input, args.output, args.layer, args.gt, device=args.device):
        print(path)


def _classify_confusion(args: argparse.Namespace) -> None:
    from dlcv.viz.confusion import write_confusion_figure

    score = write_confusion_figure(args.pred, args.gt, args.output)
    print(f"accuracy: {score.accuracy:.4f} ({score.correct}/{score.total})")
    print(args.output)


def _add_classify(commands) -> None:
    classify = _add_group(commands, "classify", "image classification")

    train = classify.add_parser("train", help="train a classifier (data: train_50/ + val_50/, or train/ + val/)")
    _add_train_options(train, ClassifyConfig())
    train.add_argument(
        "--policy",
        choices=["none", "trivialaugment", "randaugment"],
        help=f"augmentation policy (default {ClassifyConfig.policy})",
    )
    train.add_argument("--mixup", type=float, help="mixup Beta(alpha, alpha); 0 is off")
    train.add_argument("--cutmix", type=float, help="cutmix Beta(alpha, alpha); 0 is off")
    train.add_argument("--label-smoothing", type=float, help=f"(default {ClassifyConfig.label_smoothing})")
    train.add_argument("--ema", type=float, help="decay of a moving average of the weights (e.g. 0.999); 0 is off")
    train.set_defaults(handler=_classify_train)

    predict = classify.add_parser("predict", help="write the graders' CSV (image_id,label) for a folder of images")
    _add_checkpoint_options(predict, "CSV file to write")
    predict.add_argument("--batch-size", type=_positive_int, default=256, help="images per batch (default 256)")
    _add_scoring_options(predict, "folder of <label>_<index> images, or a CSV of labels")
    predict.set_defaults(handler=_classify_predict)

    evaluate = classify.add_parser("eval", help="accuracy of a predictions CSV, overall and per class")
    evaluate.add_argument("--pred", required=True, help="predictions CSV (image_id,label)")
    evaluate.add_argument("--gt", required=True, help="folder of <label>_<index> images, or a CSV of labels")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of text")
    evaluate.set_defaults(handler=_classify_eval)

    tsne = classify.add_parser("tsne", help="t-SNE figure of one layer's features (and its points as CSV)")
    _add_checkpoint_options(tsne, "PNG file to write; the points go beside it as .csv")
    tsne.add_argument("--layer", help="module name (default: the model's penultimate layer)")
    tsne.add_argument("--gt", help="labels from this folder or CSV instead of the file names")
    tsne.set_defaults(handler=_classify_tsne)

    confusion = classify.add_parser("confusion", help="the confusion matrix of a predictions CSV as a figure")
    confusion.add_argument("--pred", required=True, help="predictions CSV (image_id,label)")
    confusion.add_argument("--gt", required=True, help="folder of <label>_<index> images, or a CSV of labels")
    confusion.add_argument("--output", required=True, help="PNG file to write")
    confusion.set_defaults(handler=_classify_confusion)


# ---- misc -------------------------------------------------------------------------------------------


def _describe(args: argparse.Namespace) -> None:
    from dlcv.models import describe_model, model_names

    if args.list or args.model is None:
        for name in model_names():
            print(name)
        return
    print(describe_model(args.model, args.classes))


def _demo(args: argparse.Namespace) -> None:
    from dlcv.demo import run_demo

    for line in run_demo(args.out, args.command_line):
        print(line)


def _report(args: argparse.Namespace) -> None:
    from dlcv.report import write_report

    print(f"wrote {write_report(args.runs, args.out, args.ids)}")


def _reproduce(args: argparse.Namespace) -> None:
    from dlcv.reproduce import REPORT_PRESETS, run_reproduce

    argv = ["dlcv", "reproduce", "--data", args.data, "--out", args.out, "--weights", args.weights]
    argv += ["--device", args.device] + ["--quick"] * args.quick + ["--overwrite"] * args.overwrite
    argv += ["--presets", *args.presets] if args.presets else []
    presets = tuple(args.presets) if args.presets else REPORT_PRESETS
    for line in run_reproduce(
        args.data, args.out, args.quick, args.weights, args.device, args.overwrite, shlex.join(argv), presets
    ):
        print(line)


def _results_publish(args: argparse.Namespace) -> None:
    from dlcv.results import publish

    added, table, markdown = publish(args.sources, args.docs)
    print(f"added {counted(added, 'row')} to {table}; rendered {markdown}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dlcv",
        description=dlcv.__doc__,
        epilog="Start with 'dlcv demo'; 'dlcv COMMAND --help' tells each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"dlcv {dlcv.__version__}")
    commands = parser.add_subparsers(metavar="COMMAND", required=True, parser_class=_Parser)
    _add_segment(commands)
    _add_classify(commands)

    describe = commands.add_parser("describe", help="print a model's architecture and parameter counts")
    describe.add_argument("model", nargs="?")
    describe.add_argument("--classes", type=_positive_int, default=None, help="number of classes (default: the task's)")
    describe.add_argument("--list", action="store_true", help="list the model names")
    describe.set_defaults(handler=_describe)

    demo = commands.add_parser("demo", help="generate data, train, predict, evaluate and draw, end to end")
    demo.add_argument("--out", default="dlcv-demo", help="folder for everything the demo makes")
    demo.set_defaults(handler=_demo)

    report = commands.add_parser("report", help="one self-contained HTML page from run folders of any task")
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (classification or segmentation)")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.add_argument("--ids", nargs="+", help="validation ids whose masks are shown (default 0010 0097 0107)")
    report.set_defaults(handler=_report)

    reproduce = commands.add_parser("reproduce", help="the course report's three experiments, scored and reported")
    reproduce.add_argument("--data", required=True, help="the course folder holding p1_data/ and p2_data/")
    reproduce.add_argument("--out", required=True, help="folder for runs/, predictions/, report.html, results.csv")
    reproduce.add_argument("--quick", action="store_true", help="scaled down to minutes on a CPU (else: for a GPU)")
    reproduce.add_argument("--weights", default="imagenet", help="imagenet, none, or a VGG16 state-dict file")
    reproduce.add_argument("--device", default="auto", choices=DEVICES, help="auto: a GPU where there is one")
    reproduce.add_argument(
        "--presets",
        nargs="+",
        metavar="NAME",
        help="experiments to run instead of the report's three, e.g. strong_deeplabv3plus_vgg16 strong_resnet18_cifar "
        "(the YAML files in dlcv/configs)",
    )
    reproduce.add_argument("--overwrite", action="store_true", help="replace the runs of an earlier reproduce in --out")
    reproduce.set_defaults(handler=_reproduce)

    results = _add_group(commands, "results", "published results")
    publish = results.add_parser(
        "publish", help="append results.csv files and finished run folders to DOCS/results.csv, render RESULTS.md"
    )
    publish.add_argument(
        "sources",
        nargs="*",
        metavar="RESULTS_CSV|RUN_DIR",
        help="results.csv files written by reproduce, or run folders (run.json + config.yaml: one row each)",
    )
    publish.add_argument("--docs", default="docs", help="folder of results.csv and RESULTS.md (default: docs)")
    publish.set_defaults(handler=_results_publish)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        args = build_parser().parse_args(argv)
        args.command_line = shlex.join(["dlcv", *(sys.argv[1:] if argv is None else argv)])
        command: Callable[[argparse.Namespace], None] = args.handler
        command(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C: the shell's status for SIGINT, one line, no traceback
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return 130
    return 0

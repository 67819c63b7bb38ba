"""``dlcv reproduce``: the course report's three experiments from presets, scored, reported and recorded.

The presets are YAML files shipped in the package (``dlcv/configs``): ``report_<model>.yaml`` is the
full experiment (meant for a GPU); ``--quick`` lays ``quick_<task>.yaml`` over it (fewer images,
smaller sizes, an epoch or two) so the whole pipeline runs in minutes on a CPU. Each run folder
keeps its resolved config.yaml, so any single experiment repeats with ``dlcv ... train --config``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dlcv.config import ClassifyConfig, SegmentConfig, TrainConfig, preset_path, read_yaml, resolve_config
from dlcv.data.classification import classification_dirs
from dlcv.errors import UserError
from dlcv.metrics import evaluate_label_csv, evaluate_mask_folders
from dlcv.models import get_entry
from dlcv.predict import predict_masks
from dlcv.report import write_report
from dlcv.results import RESULTS_CSV, run_result, write_results
from dlcv.training.classification import TSNE_CSV, VAL_PREDICTIONS, train_classification
from dlcv.training.runner import RUN_MARKERS
from dlcv.training.segmentation import train_segmentation
from dlcv.viz.tsne import write_tsne

REPORT_HTML = "report.html"


#: Where each task's data lies under the course folder.
DATA_FOLDERS = {"classify": "p1_data", "segment": "p2_data"}
#: The report's experiments, in its order (presets in dlcv/configs).
REPORT_PRESETS = ("report_vgg16_bn", "report_fcn32s", "report_fcn8s")
CONFIG_CLASSES: dict[str, type[TrainConfig]] = {"classify": ClassifyConfig, "segment": SegmentConfig}


@dataclass(frozen=True)
class Experiment:
    preset: str  # the preset file's stem
    task: str  # classify | segment
    model: str

    @property
    def name(self) -> str:
        """The run folder's name: the preset's, less the ``report_`` of the report's own experiments."""
        return self.preset.removeprefix("report_")

    @property
    def data(self) -> str:
        return DATA_FOLDERS[self.task]


def preset_names() -> list[str]:
    """Every experiment preset shipped (the quick overlays are not experiments)."""
    folder = preset_path("")
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("quick_"))


def experiment_for(preset_name: str) -> Experiment:
    if preset_name not in preset_names():
        raise UserError(f"unknown preset {preset_name!r}; choose from: {', '.join(preset_names())}")
    model = read_yaml(preset_path(f"{preset_name}.yaml"))["model"]
    return Experiment(preset_name, get_entry(model).task, model)


def preset_files(experiment: Experiment, quick: bool) -> list[Path]:
    """The experiment's preset, then (``quick``) ``quick_<task>.yaml`` and ``quick_<name>.yaml`` if shipped.

    Layered by :func:`resolve_config`, later files winning, so a bad value's error names the file that set it.
    """
    files = [preset_path(f"{experiment.preset}.yaml")]
    if quick:
        files += [preset_path(f"quick_{experiment.task}.yaml"), preset_path(f"quick_{experiment.name}.yaml")]
    return [path for path in files if path.is_file()]


def experiment_configs(
    data: str | Path,
    out: str | Path,
    quick: bool = False,
    weights: str = "imagenet",
    device: str = "auto",
    presets: tuple[str, ...] = REPORT_PRESETS,
) -> list[tuple[Experiment, TrainConfig]]:
    """The resolved config of each experiment: preset < quick overlays < data, run folder, weights, device."""
    data, out = Path(data), Path(out)
    experiments = [experiment_for(name) for name in presets]
    for folder in dict.fromkeys(data / e.data for e in experiments):
        if not folder.is_dir():
            raise UserError(f"{folder}: missing (--data must be the course folder holding p1_data/ and p2_data/)")
    configs = []
    for experiment in experiments:
        fixed = {"data": str(data / experiment.data), "out": str(out / "runs" / experiment.name)}
        fixed |= {"weights": weights, "device": device}
        config = resolve_config(CONFIG_CLASSES[experiment.task], preset_files(experiment, quick), fixed)
        configs.append((experiment, config))
    return configs


def _check_fresh(configs: list[tuple[Experiment, TrainConfig]], overwrite: bool) -> None:
    """Refuse, before any training, to replace runs of an earlier reproduce unless ``overwrite``."""
    if overwrite:
        return
    for _, config in configs:
        present = [name for name in RUN_MARKERS if (Path(config.out) / name).exists()]
        if present:
            raise UserError(f"{config.out}: already holds a run ({', '.join(present)}); pass --overwrite to replace it")


def _score(experiment: Experiment, config: TrainConfig, run_dir: Path, predictions: Path) -> tuple[float, str]:
    """(value, what) of the run's best checkpoint on the whole validation set, as the graders score it."""
    if experiment.task == "segment":
        validation = Path(config.data) / "validation"
        predict_masks(run_dir / "best.ckpt", validation, predictions, device=config.device, workers=0)
        score = evaluate_mask_folders(predictions, validation)
        return score.miou, f"mIoU {score.miou:.4f} on {score.images} validation pairs"
    _, val_dir, val_csv = classification_dirs(config.data)
    score = evaluate_label_csv(run_dir / VAL_PREDICTIONS, val_csv or val_dir)
    # The report's t-SNE, kept in the run folder (the report draws it from the CSV).
    write_tsne(run_dir / "best.ckpt", val_dir, (run_dir / TSNE_CSV).with_suffix(".png"), truth=val_csv or val_dir)
    return score.accuracy, f"accuracy {100 * score.accuracy:.2f}% = {score.correct}/{score.total}"


def run_reproduce(
    data: str | Path,
    out: str | Path,
    quick: bool = False,
    weights: str = "imagenet",
    device: str = "auto",
    overwrite: bool = False,
    command: str = "dlcv reproduce",
    presets: tuple[str, ...] = REPORT_PRESETS,
) -> Iterator[str]:
    """Train, score and report the experiments (by default the report's three) into ``out``; yield progress lines.

    ``out`` gets ``runs/<model>/`` (run folders), ``predictions/<model>/`` (the segmentation masks),
    ``report.html`` and ``results.csv`` (one row per experiment, ready for ``dlcv results publish``).
    """
    out = Path(out)
    configs = experiment_configs(data, out, quick, weights, device, presets)
    _check_fresh(configs, overwrite)
    train = {"classify": train_classification, "segment": train_segmentation}
    started, results = time.perf_counter(), []
    for experiment, config in configs:
        scale = f"{config.epochs} epochs{', quick' if quick else ''}"
        yield f"training {experiment.name} ({experiment.model}) on {config.data} ({scale})"
        summary = train[experiment.task](config, command, overwrite=overwrite)
        value, what = _score(experiment, config, summary.run_dir, out / "predictions" / experiment.name)
        yield f"{experiment.name}: {what} (best.ckpt; trained in {summary.wall_s:.0f} s)"
        # The run's own record (run.json, config.yaml: this command among it), with the graders' score.
        results.append(run_result(summary.run_dir).scored(value))
    yield f"report: {write_report([config.out for _, config in configs], out / REPORT_HTML)}"
    yield f"results: {write_results(out / RESULTS_CSV, results)}"
    yield f"done in {time.perf_counter() - started:.0f} s"

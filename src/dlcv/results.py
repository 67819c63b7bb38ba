"""Published results: ``results.csv`` rows (one per measured number) and the RESULTS.md made from them.

Every number dlcv publishes was run by a command, on a device, at a commit: a row keeps all of it,
so it can be checked and repeated. Every finished training run records this in ``RUN/run.json``;
``dlcv reproduce`` writes the rows of its runs, and ``predict --gt --results`` the row of a checkpoint's
predictions scored later (with test-time augmentation, say); ``dlcv results publish`` appends rows (from
results.csv files or run folders) to ``docs/results.csv`` and renders ``docs/RESULTS.md`` beside the
course report's own numbers.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import shlex
import statistics
import subprocess
from dataclasses import astuple, dataclass, fields, replace
from pathlib import Path

from dlcv.config import CONFIG_NAME, read_yaml
from dlcv.errors import UserError
from dlcv.files import read_user_text, write_csv_atomic, write_text_atomic

RESULTS_CSV, RESULTS_MD, RUN_JSON = "results.csv", "RESULTS.md", "run.json"
#: The score each task publishes (its runs' monitored validation score).
METRICS = {"classify": "accuracy", "segment": "miou"}


@dataclass(frozen=True)
class Result:
    task: str  # classify | segment
    model: str
    weights: str  # imagenet, none, or the weights file's name
    split: str
    metric: str  # accuracy | miou
    value: float
    epochs: int
    wall_s: float  # training time
    device: str  # as the run reported it: "cpu" or the GPU's name
    command: str
    commit: str
    date: str

    def scored(self, value: float) -> Result:
        """This row with the score ``value``, to the six places the table keeps."""
        return replace(self, value=round(value, 6))


COLUMNS = [f.name for f in fields(Result)]


@dataclass(frozen=True)
class Reference:
    task: str
    model: str | None  # the dlcv model it compares with, if any
    metric: str
    value: float
    what: str


#: The course report's numbers and its peers': printed beside what dlcv measures, never run here.
REFERENCES = (
    Reference("classify", "vgg16_bn", "accuracy", 0.7416, "the report: VGG16-BN, 1854/2500"),
    Reference("classify", None, "accuracy", 0.908, "a peer: ResNeXt"),
    Reference("segment", "fcn32s", "miou", 0.6805, "the report: FCN-32s"),
    Reference("segment", "fcn8s", "miou", 0.6987, "the report: FCN-8s"),
    Reference("segment", None, "miou", 0.7361, "best of the report's year: DeepLabv3"),
    Reference("segment", None, "miou", 0.7614, "a peer: ResNet-101 PSPNet"),
)


def source_commit() -> str | None:
    """``git rev-parse --short HEAD`` of the checkout dlcv runs from, ``-dirty`` when its source (``src/``) differs
    from that commit (changed, or new and not ignored; edits to docs or tests change no run); None for an
    installed copy, or where git is missing or fails. ``DLCV_SOURCE_COMMIT``, when set, names it instead: a
    copy of a checkout without its ``.git`` (as a lent GPU machine receives) cannot ask git."""
    if os.environ.get("DLCV_SOURCE_COMMIT"):
        return os.environ["DLCV_SOURCE_COMMIT"]
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None

    def git(*argv: str) -> str:
        command = ["git", "-C", str(root), *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", "src"))
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if commit and dirty else commit or None


def today() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")


def write_run_record(
    run_dir: str | Path,
    task: str,
    command: str,
    commit: str | None,
    wall_s: float,
    epochs: int,
    device: str,
    monitor: str,
    best_score: float | None,
) -> Path:
    """``RUN/run.json``: how a finished run was made (command, commit, date, device, time, best score).

    ``commit`` is the source's when the run started (the checkout may move on while it trains), joined by
    ``+`` to another's where a resume ran from a different commit.
    """
    record = {
        "task": task,
        "command": command,
        "commit": commit,
        "date": today(),
        "wall_s": round(wall_s, 1),
        "epochs": epochs,
        "device": device,
        "monitor": monitor,
        "best_score": best_score,
    }
    path = Path(run_dir) / RUN_JSON
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def run_result(run_dir: str | Path) -> Result:
    """The row of a finished run folder (its run.json and config.yaml): the best validation score it kept."""
    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run_dir}: not a finished run folder (no {RUN_JSON})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{run_dir / RUN_JSON}: not readable ({exc})") from None
    if not (run_dir / CONFIG_NAME).is_file():
        raise UserError(f"{run_dir}: not a run folder (no {CONFIG_NAME})")
    config = read_yaml(run_dir / CONFIG_NAME)
    if record.get("best_score") is None:
        raise UserError(f"{run_dir / RUN_JSON}: the run has no validation score to publish")
    try:
        return Result(
            task=record["task"],
            model=str(config["model"]),
            weights=Path(str(config["weights"])).name,
            split="validation",
            metric=METRICS[record["task"]],
            value=round(float(record["best_score"]), 6),
            epochs=int(record["epochs"]),
            wall_s=float(record["wall_s"]),
            device=record["device"],
            command=record["command"],
            commit=record["commit"] or "unknown",
            date=record["date"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{run_dir}: {RUN_JSON} or {CONFIG_NAME} lacks or garbles {exc}") from None


def prediction_result(run: Result, split: str, command: str, device: str) -> Result:
    """The row of the predictions a finished ``run``'s checkpoint is about to make of ``split``: the run's model,
    weights, epochs and training time, beside the command that predicts and scores, on ``device``, at today's
    source. Its value is NaN, never a plausible score, until :meth:`Result.scored` gives it theirs."""
    commit = source_commit() or "unknown"
    return replace(run, split=split, value=math.nan, command=command, device=device, commit=commit, date=today())


def write_results(path: str | Path, results: list[Result]) -> Path:
    return write_csv_atomic(path, COLUMNS, (astuple(r) for r in results))


def read_results(path: str | Path) -> list[Result]:
    """The rows of a results CSV; an error naming the file for a wrong header or an unreadable value."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(read_user_text(path, "results file")))
    if reader.fieldnames != COLUMNS:
        raise UserError(f"{path}: expected the header {','.join(COLUMNS)}")
    results = []
    for line, row in enumerate(reader, start=2):
        try:
            results.append(
                Result(
                    **{
                        **row,
                        "value": float(row["value"]),
                        "epochs": int(row["epochs"]),
                        "wall_s": float(row["wall_s"]),
                    }
                )
            )
        except (TypeError, ValueError):
            raise UserError(f"{path}, line {line}: value, epochs and wall_s must be numbers") from None
    return results


def _source_rows(source: Path) -> list[Result]:
    return [run_result(source)] if source.is_dir() else read_results(source)


def publish(sources: list[str | Path], docs: str | Path) -> tuple[int, Path, Path]:
    """Append the rows of ``sources`` (results.csv files, or run folders: a row each) that ``docs/results.csv``
    lacks, then render ``docs/RESULTS.md``.

    Returns (rows added, the CSV, the Markdown). Publishing the same source twice adds nothing.
    """
    docs = Path(docs)
    table = docs / RESULTS_CSV
    rows = read_results(table) if table.is_file() else []
    incoming = [row for source in map(Path, sources) for row in _source_rows(source)]
    added = [row for row in dict.fromkeys(incoming) if row not in rows]
    rows += added
    write_results(table, rows)
    markdown = docs / RESULTS_MD
    write_text_atomic(markdown, render_markdown(rows))
    return len(added), table, markdown


@dataclass(frozen=True)
class SeedGroup:
    """Runs of one training command with different seeds: the spread of a recipe's score."""

    task: str
    model: str
    metric: str
    recipe: str  # the command without --out and --seed
    seeds: tuple[str, ...]  # as the commands gave them; "-" where one gave none (the configured seed)
    values: tuple[float, ...]
    commits: tuple[str, ...]  # the commit each run trained at


#: Options that name where a run lands or how its draws fall, not what it trains.
_RUN_ONLY_OPTIONS = ("--out", "--seed")


def _recipe_and_seed(command: str) -> tuple[str, tuple[tuple[str, ...], ...], str] | None:
    """(the command without ``--out`` and ``--seed``, its options in a canonical order, the seed it gave or
    "-"), or None if not ``dlcv TASK train``.

    The canonical order sorts options by name, so ``--lr 0.1 --epochs 5`` and ``--epochs 5 --lr 0.1`` are one
    recipe; the sort is stable, so a repeated option (``--config A --config B``, where B wins) keeps its order.
    """
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if argv[:1] != ["dlcv"] or argv[2:3] != ["train"]:
        return None
    options: list[list[str]] = []  # each option with the values that follow it, --name=value split
    for token in argv[3:]:
        if token.startswith("--"):
            options.append(token.split("=", 1))
        elif options:
            options[-1].append(token)
        else:
            return None  # training takes no positional arguments: not a command dlcv ran
    seeds = [option[1:] for option in options if option[0] == "--seed"]
    kept = [option for option in options if option[0] not in _RUN_ONLY_OPTIONS]
    recipe = shlex.join([*argv[:3], *(token for option in kept for token in option)])
    canonical = tuple(tuple(option) for option in sorted(kept, key=lambda option: option[0]))
    return recipe, (tuple(argv[:3]), *canonical), " ".join(seeds[-1]) if seeds else "-"


#: task, model, split, metric and the command's options in canonical order
_SeriesKey = tuple[str, str, str, str, tuple[tuple[str, ...], ...]]


def seed_groups(results: list[Result]) -> list[SeedGroup]:
    """Series of rows trained by the same command but for ``--out``, each with two or more ``--seed`` values,
    in first-row order.

    One run's score says little while the seed alone moves it more than most recipe changes do; the
    series show how far it moves. A command rerun with a seed it already ran starts a new series: one
    command and seed give one score unless the code changed in between, so the rows before and after
    measure different code and are never pooled.
    """
    # each key's open series: the recipe as its first row wrote it, and the rows by seed
    latest: dict[_SeriesKey, tuple[str, dict[str, Result]]] = {}
    series: list[tuple[_SeriesKey, tuple[str, dict[str, Result]]]] = []
    for r in results:
        parsed = _recipe_and_seed(r.command)
        if parsed is None:
            continue
        recipe, canonical, seed = parsed
        key = (r.task, r.model, r.split, r.metric, canonical)
        if key not in latest or seed in latest[key][1]:
            latest[key] = (recipe, {})
            series.append((key, latest[key]))
        latest[key][1][seed] = r
    return [
        SeedGroup(
            task,
            model,
            metric,
            recipe,
            tuple(runs),
            tuple(r.value for r in runs.values()),
            tuple(r.commit for r in runs.values()),
        )
        for (task, model, _split, metric, _options), (recipe, runs) in series
        if len(runs) > 1
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(metric: str, value: float) -> str:
    return f"{100 * value:.2f}%" if metric == "accuracy" else f"{value:.4f}"


def _seed_table(groups: list[SeedGroup]) -> list[str]:
    if not groups:
        return []
    lines = [
        "### Repeated runs",
        "",
        "Rows above whose training commands differ only in `--out`, `--seed` and the order of their options",
        "(seed `-`: the command gave none, so the configured seed, 0 unless a config file sets another): the mean",
        "and sample standard deviation of their scores over the seeds. A command rerun with a seed it already ran",
        "starts a new series (the code changed in between). Runs of different seeds join a series whatever their",
        "commits, so a series whose commits differ may pool code that changed between them (`git diff` shows what).",
        "",
        "| model | runs | seeds | mean | std | min | max | commits | command |",
        "|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for g in groups:
        mean, std, low, high = statistics.fmean(g.values), statistics.stdev(g.values), min(g.values), max(g.values)
        scores = " | ".join(_value(g.metric, v) for v in (mean, std, low, high))
        lines.append(
            f"| {_cell(g.model)} | {len(g.values)} | {', '.join(g.seeds)} | {scores} | {', '.join(g.commits)} "
            f"| `{_cell(g.recipe)}` |"
        )
    return [*lines, ""]


def render_markdown(results: list[Result]) -> str:
    """RESULTS.md: the measured numbers per task, each beside the report's number for its model."""
    lines = [
        "# Results",
        "",
        "Every number below was measured by a command of this repository on the course's validation sets",
        "(classification: `p1_data/val_50`, 2,500 images; segmentation: `p2_data/validation`, 257 pairs, scored",
        "by the graders' mIoU). This page is generated from [results.csv](results.csv) by",
        "`dlcv results publish`; do not edit it by hand.",
        "",
        "Rows marked *quick* come from `dlcv reproduce --quick`: the report's experiments scaled down",
        "(fewer images, smaller sizes, an epoch or two) to finish in minutes on a CPU. They show the pipeline",
        "end to end, not what the models can reach; the full experiments are `dlcv reproduce` without `--quick`,",
        "meant for a GPU. Rows marked *all data* trained on every training image and were scored on the whole",
        "validation set; those on `cpu` are sized to a 2-core CPU, a few hours at most (their wall time says):",
        "a smaller model, fewer epochs or smaller images than a GPU run would use, as their command says.",
        "A command's presets (`--config NAME`) are as they were at its row's commit; one changed since then",
        "runs differently today (`git show COMMIT:src/dlcv/configs/NAME.yaml` shows it as it was).",
        "",
    ]
    titles = {"classify": "Classification: accuracy", "segment": "Segmentation: mIoU"}
    for task, title in titles.items():
        lines += [f"## {title}", ""]
        rows = [r for r in results if r.task == task]
        if rows:
            lines += [
                "| model | weights | split | value | the report | run | epochs | train wall (s) | device | commit |"
                " date | command |",
                "|---|---|---|---:|---:|---|---:|---:|---|---|---|---|",
            ]
            for r in rows:
                report = next((ref for ref in REFERENCES if ref.task == task and ref.model == r.model), None)
                kind = "quick" if "--quick" in r.command.split() else "all data"
                lines.append(
                    f"| {_cell(r.model)} | {_cell(r.weights)} | {_cell(r.split)} | {_value(r.metric, r.value)} | "
                    f"{_value(report.metric, report.value) if report else '-'} | {kind} | {r.epochs} | "
                    f"{r.wall_s:.0f} | {_cell(r.device)} | {_cell(r.commit)} | {r.date} | `{_cell(r.command)}` |"
                )
        else:
            lines.append("No results yet.")
        lines.append("")
        lines += _seed_table(seed_groups(rows))
    lines += ["## The report's numbers and its peers' (not run here)", "", "| task | what | metric | value |"]
    lines.append("|---|---|---|---:|")
    for ref in REFERENCES:
        lines.append(
            f"| {titles[ref.task].split(':')[0]} | {ref.what} | {ref.metric} | {_value(ref.metric, ref.value)} |"
        )
    lines += [
        "",
        "## Adding results",
        "",
        "    dlcv reproduce --data HW2_DIR --out OUT [--quick]      # writes OUT/results.csv and OUT/report.html",
        "    dlcv results publish OUT/results.csv --docs docs      # appends to docs/results.csv, renders this page",
        "    dlcv results publish RUN_DIR --docs docs              # a finished training run's best score",
        "    dlcv results publish tta.csv --docs docs              # a score kept by predict --gt G --results tta.csv",
        "",
    ]
    return "\n".join(lines)

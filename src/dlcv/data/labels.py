"""Class labels of image files: ``<label>_<index>.png`` names and ``filename,label`` CSV files.

The standard library and numpy only, so that ``dlcv classify eval`` never imports torch. Labels are
class numbers 0, 1, ...; a CSV names images by file name (``0_450.png``), as the graders do.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from dlcv.data.images import list_images
from dlcv.errors import UserError, abbreviate, counted
from dlcv.files import read_user_text, write_csv_atomic

#: Accepted first columns of a label CSV; predictions are written with ``image_id``, the graders' header.
NAME_COLUMNS = ("filename", "image_id")
PREDICTION_HEADER = ("image_id", "label")
#: Class numbers run 0 .. MAX_CLASSES - 1. The bound keeps a confusion matrix (MAX_CLASSES² counts, 128 MB)
#: in memory, so that an image id read as a label is an error, not an allocation of gigabytes.
MAX_CLASSES = 4096


def class_number(text: str) -> int | None:
    """``text`` as a class number, or None when it is none (not digits, or MAX_CLASSES or more)."""
    if not (text.isascii() and text.isdigit()) or int(text) >= MAX_CLASSES:
        return None
    return int(text)


def label_of(name: str | Path) -> int | None:
    """The class in a file name ``<label>_<index>.<ext>``, or ``None`` when the name carries none."""
    head, separator, _ = Path(name).stem.partition("_")
    return class_number(head) if separator else None


def parse_label(path: str | Path) -> int:
    """The class in ``path``'s name; a user error naming the file when it carries none."""
    label = label_of(path)
    if label is None:
        expected = f"<label>_<index>, label 0 .. {MAX_CLASSES - 1}, e.g. 12_345.png"
        raise UserError(f"{path}: file name carries no label (expected {expected})")
    return label


def read_label_csv(path: str | Path) -> dict[str, int]:
    """Rows ``filename,label`` or ``image_id,label`` as {file name: class}; a bad or repeated row is an error."""
    path = Path(path)
    text = read_user_text(path, "CSV file", encoding="utf-8-sig")  # -sig: spreadsheets start CSVs with a BOM
    rows = csv.reader(io.StringIO(text))
    header = [cell.strip() for cell in next(rows, [])]
    if len(header) < 2 or header[0] not in NAME_COLUMNS or header[1] != "label":
        raise UserError(f"{path}: expected the header filename,label or image_id,label, found {','.join(header)!r}")
    labels: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2:
            raise UserError(f"{path}, line {line}: expected name,label, found {','.join(row)!r}")
        name, label = row[0].strip(), class_number(row[1].strip())
        if label is None:
            message = f"label {row[1].strip()!r} of {name} is not a class number (0 .. {MAX_CLASSES - 1})"
            raise UserError(f"{path}, line {line}: {message}")
        if name in labels:
            raise UserError(f"{path}, line {line}: {name} appears twice")
        labels[name] = label
    if not labels:
        raise UserError(f"{path}: no rows under the header")
    return labels


def ground_truth(source: str | Path) -> dict[str, int]:
    """{file name: class} from a folder of ``<label>_<index>`` images or from a label CSV."""
    source = Path(source)
    if source.is_dir():
        return {path.name: parse_label(path) for path in list_images(source)}
    return read_label_csv(source)


def match_names(have: Iterable[str], want: Iterable[str], have_source: str | Path, want_source: str | Path) -> None:
    """An error naming the files unless ``have`` (from ``have_source``) names exactly the images of ``want``."""
    have, want = set(have), set(want)
    missing, extra = sorted(want - have), sorted(have - want)
    if missing:
        raise UserError(
            f"{have_source}: no label for {counted(len(missing), 'image')} of {want_source}: {abbreviate(missing)}"
        )
    if extra:
        raise UserError(
            f"{have_source}: labels for {counted(len(extra), 'image')} not in {want_source}: {abbreviate(extra)}"
        )


def write_label_csv(path: str | Path, names: Sequence[str], labels: Iterable[int]) -> None:
    """The graders' format: header ``image_id,label``, one row per image, sorted by file name; atomically."""
    write_csv_atomic(path, PREDICTION_HEADER, sorted(zip(names, (int(label) for label in labels), strict=True)))

"""Files: user files read with one clear error, and writes that never leave half a result behind."""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dlcv.errors import UserError


def read_user_text(path: Path, what: str, encoding: str = "utf-8") -> str:
    """The text of a file the user named; missing or unreadable, it is one error naming it as ``what``."""
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable {what} ({exc})") from None


def distinct_names(paths: Sequence[Path]) -> list[str]:
    """Each path's name, with as many of its parent folders in front as tell it apart (``a/x/run``, ``b/x/run``)."""
    parts = [(*path.resolve().parent.parts, path.name) for path in paths]

    def tail(i: int, depth: int) -> tuple[str, ...]:
        return parts[i][-depth:]

    names = []
    for i, own in enumerate(parts):
        depth = 1
        while depth < len(own) and any(tail(j, depth) == tail(i, depth) for j in range(len(parts)) if j != i):
            depth += 1
        names.append("/".join(tail(i, depth)))
    return names


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_folder(folder: Path) -> None:
    """Create ``folder`` and its parents; when that cannot be, one error naming what stands in the way."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise UserError(f"{blocker}: a file, where {folder} needs a folder") from None
        raise UserError(f"{folder}: cannot create this folder ({exc.strerror})") from None


def _temporary_beside(path: Path, folder: bool) -> Path:
    """A new hidden temporary file (or ``folder``) beside ``path``, its folder created if need be."""
    make_folder(path.parent)
    options = {"dir": path.parent, "prefix": f".{path.name}."}
    try:
        if folder:
            return Path(tempfile.mkdtemp(suffix=".partial", **options))
        fd, name = tempfile.mkstemp(suffix=".tmp", **options)
    except OSError as exc:
        raise UserError(f"{path.parent}: cannot write here ({exc.strerror})") from None
    os.close(fd)
    return Path(name)


def refuse_folder(path: str | Path) -> Path:
    """``path``, where a file is to be written; an error if a folder is in the way."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: a folder, where a file is to be written")
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` that replaces it only if the block succeeds.

    The rename is atomic on POSIX file systems, so readers (and a kill -9) see either the old file
    whole or the new file whole.
    """
    path = refuse_folder(path)
    tmp = _temporary_beside(path, folder=False)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result gets the mode of an ordinary new file
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv_atomic(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """A CSV file (``\\n`` line ends) written whole or not at all."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
    return Path(path)


@contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty folder whose files move into ``target`` only if the block succeeds.

    Used by commands that write many files (masks, figures): on an error nothing appears in
    ``target``.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise UserError(f"{target}: a file, where a folder is to be written")
    stage = _temporary_beside(target, folder=True)
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; a new target gets the mode of an ordinary folder
    try:
        yield stage
        if not target.exists():
            os.replace(stage, target)
            return
        for item in sorted(stage.rglob("*")):
            destination = target / item.relative_to(stage)
            if item.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, destination)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

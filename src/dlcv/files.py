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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` that replaces it only if the block succeeds.

    The rename is atomic on POSIX file systems, so readers (and a kill -9) see either the old file
    whole or the new file whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
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
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
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

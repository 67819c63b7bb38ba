"""HTML building blocks of the report: escaped text, tables with the best values marked, embedded figures.

Every piece of text goes through ``html.escape``; every figure is a PNG data URI, so the page is a
single file that fetches nothing.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --rule: #d8dce4; --best: #e3f4e1; --accent: #2c5fa8; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); margin: 0 auto; max-width: 1200px; padding: 1.5rem 2rem 4rem; }
h1 { font-size: 1.7rem; margin: 0 0 .2rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; padding-bottom: .2rem; border-bottom: 2px solid var(--accent); }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
p.meta, p.note, figcaption { color: var(--muted); font-size: .9rem; }
nav ol { columns: 2; margin: .5rem 0 0; }
a { color: var(--accent); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--rule); padding: .25rem .6rem; text-align: right; vertical-align: top; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
thead th { border-bottom: 2px solid var(--ink); background: #f4f6f9; }
td.best { background: var(--best); font-weight: 700; }
td.best::after { content: " \\2605"; font-size: .75em; }
tr.differs td:first-child { font-weight: 700; }
tr.differs td { background: #fff8e1; }
figure { margin: .6rem 0 1.4rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); }
pre.arch { max-height: 22rem; overflow: auto; font-size: 12px; background: #f7f8fa; padding: .6rem;
           border: 1px solid var(--rule); }
code { font-size: .9em; background: #f1f3f6; padding: 0 .2em; }
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { font-size: 10pt; max-width: none; padding: 0; }
  nav { display: none; }
  h2 { break-before: page; break-after: avoid; }
  section:first-of-type h2 { break-before: auto; }
  h3 { break-after: avoid; }
  figure, table { break-inside: avoid; }
  figure img { max-height: 24cm; }
  pre.arch { max-height: none; overflow: visible; font-size: 6.5pt; white-space: pre-wrap; }
  td.best, tr.differs td, thead th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  .scroll { overflow: visible; }
}
"""


@dataclass(frozen=True)
class Column:
    """A table column: its title, how its values print, and whether its best value ("max"/"min") is marked."""

    title: str
    format: Callable[[Any], str] = str
    best: str | None = None


def number(digits: int) -> Callable[[Any], str]:
    return lambda value: "" if _missing(value) else f"{value:.{digits}f}"


def percent(value: Any) -> str:
    return "" if _missing(value) else f"{100 * value:.2f}%"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _best_flags(values: Sequence[Any], direction: str | None) -> list[bool]:
    """Which of ``values`` are the best (ties all marked); nothing is marked where all numbers are equal."""
    numbers = [v for v in values if isinstance(v, int | float) and not _missing(v)]
    if direction is None or len(set(numbers)) < 2:
        return [False] * len(values)
    best = max(numbers) if direction == "max" else min(numbers)
    return [isinstance(v, int | float) and not _missing(v) and v == best for v in values]


def table(columns: Sequence[Column], rows: Sequence[Sequence[Any]], differing_rows: bool = False) -> str:
    """An HTML table; ``Column.best`` marks the best value of a column, ``differing_rows`` highlights rows
    whose values (after the first cell) differ."""
    best_by_column = [_best_flags([row[c] for row in rows], column.best) for c, column in enumerate(columns)]
    head = "".join(f"<th>{escape(c.title)}</th>" for c in columns)
    body = []
    for r, row in enumerate(rows):
        differs = differing_rows and len({repr(v) for v in row[1:]}) > 1
        cells = []
        for value, column, flags in zip(row, columns, best_by_column, strict=True):
            best = flags[r]
            text = escape(column.format(value))
            classes = (["best"] if best else []) + ([] if isinstance(value, int | float) else ["text"])
            attribute = f' class="{" ".join(classes)}"' if classes else ""
            title = ' title="best"' if best else ""
            cells.append(f"<td{attribute}{title}>{text}</td>")
        row_class = ' class="differs"' if differs else ""
        body.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def figure(fig: Figure, caption: str, dpi: int = 100) -> str:
    """``fig`` as an embedded PNG with a caption; the matplotlib figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img src="{uri}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'


def paragraph(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def heading(text: str) -> str:
    return f"<h3>{escape(text)}</h3>"


def preformatted(text: str) -> str:
    return f'<pre class="arch">{escape(text)}</pre>'


@dataclass
class Section:
    anchor: str
    title: str
    body: str


def page(title: str, meta: str, sections: Sequence[Section]) -> str:
    """The whole document: title, a table of contents, then each section."""
    toc = "".join(f'<li><a href="#{escape(s.anchor)}">{escape(s.title)}</a></li>' for s in sections)
    parts = [f'<section id="{escape(s.anchor)}"><h2>{escape(s.title)}</h2>{s.body}</section>' for s in sections]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><header><h1>{escape(title)}</h1>"
        f'<p class="meta">{escape(meta)}</p><nav><ol>{toc}</ol></nav></header>\n'
        + "\n".join(parts)
        + "\n</body></html>\n"
    )

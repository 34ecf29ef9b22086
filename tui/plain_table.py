"""Tables and notes for ``overton stats`` without rich.

Importing rich's console, text and table modules and rendering three small tables with them
costs about 40 ms, more than the whole start-up budget of ``overton stats`` (issue 5 target 4:
at most 1.5× ``python -c "import typer, rich"``). This module draws the same layout as the
``rich.table.Table(box=SIMPLE_HEAD, collapse_padding=True, pad_edge=False)`` it replaces: the
title (italic) wrapped to the table's width, a blank line, the header (bold), a rule, the rows,
a blank line; a space at each edge and two between columns. Widths are terminal cells (wide
East Asian characters count two); columns that may wrap (``no_wrap=False``) give up width, down
to their ``min_width``, when the table is wider than the terminal, and their cells wrap at
spaces (long words are folded). Styles (bold, dim, italic) are written as ANSI codes only to a
terminal, as rich does; text is never interpreted as markup, so callers pass it through
``engine.sanitize.printable`` for control characters.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from dataclasses import dataclass, field

STYLES = {"bold": "1", "dim": "2", "italic": "3"}


def cell_len(text: str) -> int:
    """Terminal cells of ``text``: wide and full-width characters two, combining marks none."""
    if text.isascii():
        return len(text)
    n = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        n += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return n


class Styled:
    """Text with styled spans: ``Styled("aligned", "bold") + "*"``."""

    def __init__(self, text: str = "", style: str = "") -> None:
        self.text = text
        self.spans: list[tuple[int, int, str]] = [(0, len(text), style)] if style and text else []

    def __add__(self, other: Styled | str) -> Styled:
        other = other if isinstance(other, Styled) else Styled(other)
        out = Styled(self.text + other.text)
        shift = len(self.text)
        out.spans = self.spans + [(a + shift, b + shift, s) for a, b, s in other.spans]
        return out

    def render(self, start: int, end: int, ansi: bool) -> str:
        """Characters ``start:end``, with ANSI styles when ``ansi``."""
        if not ansi or not self.spans:
            return self.text[start:end]
        out, pos = [], start
        for a, b, style in sorted(self.spans):
            a, b = max(a, pos), min(b, end)
            if a >= b:
                continue
            out.append(self.text[pos:a])
            codes = ";".join(STYLES[s] for s in style.split() if s in STYLES)
            out.append(f"\x1b[{codes}m{self.text[a:b]}\x1b[0m" if codes else self.text[a:b])
            pos = b
        out.append(self.text[pos:end])
        return "".join(out)


def _as_styled(value: Styled | str) -> Styled:
    return value if isinstance(value, Styled) else Styled(str(value))


def wrap(text: str, width: int) -> list[tuple[int, int]]:
    """Greedy word wrap of ``text`` to ``width`` cells: ``(start, end)`` of each line; the spaces
    where a line breaks are dropped and words longer than a line are folded."""
    width = max(width, 1)
    if cell_len(text) <= width and "\n" not in text:
        return [(0, len(text))]
    lines: list[tuple[int, int]] = []
    for para_start, para in _paragraphs(text):
        start = end = para_start  # the line being built: text[start:end]
        used = 0
        i = 0
        while i < len(para):
            j = para.find(" ", i)
            j = len(para) if j < 0 else j
            word_start, word_end = para_start + i, para_start + j
            w = cell_len(text[word_start:word_end])
            gap = 1 if end > start else 0
            if used + gap + w <= width:
                end, used = word_end, used + gap + w
            else:
                if end > start:
                    lines.append((start, end))
                start = word_start
                used = 0
                pos = word_start
                while pos < word_end:  # fold a word longer than the line
                    k, cells = pos, 0
                    while k < word_end and cells + cell_len(text[k]) <= width:
                        cells += cell_len(text[k])
                        k += 1
                    k = max(k, pos + 1)
                    if k < word_end:
                        lines.append((pos, k))
                        pos = k
                    else:
                        start, end, used = pos, word_end, cell_len(text[pos:word_end])
                        break
            i = j + 1
        lines.append((start, end))
    return lines


def _paragraphs(text: str):
    offset = 0
    for part in text.split("\n"):
        yield offset, part
        offset += len(part) + 1


@dataclass
class Column:
    header: str
    justify: str = "left"
    no_wrap: bool = False
    min_width: int | None = None
    cells: list[Styled] = field(default_factory=list)


class PlainTable:
    """The subset of ``rich.table.Table`` that ``overton stats`` uses, drawn as plain text."""

    def __init__(self, title: Styled | str = "") -> None:
        self.title = _as_styled(title)
        self.columns: list[Column] = []

    def add_column(self, header: str, justify: str = "left", no_wrap: bool = False,
                   min_width: int | None = None, overflow: str = "fold") -> None:
        self.columns.append(Column(header, justify, no_wrap, min_width))

    def add_row(self, *cells: Styled | str) -> None:
        for column, cell in zip(self.columns, cells):
            column.cells.append(_as_styled(cell))

    def _widths(self, max_width: int) -> list[int]:
        widths = []
        for c in self.columns:
            natural = max([cell_len(c.header), *(cell_len(x.text) for x in c.cells)])
            widths.append(max(natural, c.min_width or 0))
        excess = 2 + 2 * (len(widths) - 1) + sum(widths) - max_width
        floors = [c.min_width or min(widths[i], 10) for i, c in enumerate(self.columns)]
        while excess > 0:  # narrow the widest column that may wrap, as far as its floor
            shrinkable = [i for i, c in enumerate(self.columns) if not c.no_wrap and widths[i] > floors[i]]
            if not shrinkable:
                break
            i = max(shrinkable, key=lambda k: widths[k])
            widths[i] -= 1
            excess -= 1
        return widths

    def render(self, max_width: int, ansi: bool = False) -> list[str]:
        widths = self._widths(max_width)
        inner = sum(widths) + 2 * (len(widths) - 1)
        total = inner + 2
        lines = []
        title_width = min(total, max_width)  # a table wider than the terminal: its title is not
        for a, b in wrap(self.title.text, title_width):
            lines.append(_pad(self.title, a, b, title_width, "left", ansi))
        lines.append(" " * total)
        header = [_pad(Styled(c.header, "bold"), 0, len(c.header), w, c.justify, ansi)
                  for c, w in zip(self.columns, widths)]
        lines.append(" " + "  ".join(header) + " ")
        lines.append(" " + "─" * inner + " ")
        for r in range(len(self.columns[0].cells) if self.columns else 0):
            cells = [c.cells[r] for c in self.columns]
            parts = [wrap(cell.text, w) if not c.no_wrap else [(0, len(cell.text))]
                     for cell, c, w in zip(cells, self.columns, widths)]
            for k in range(max(len(p) for p in parts)):
                row = []
                for cell, c, w, p in zip(cells, self.columns, widths, parts):
                    row.append(_pad(cell, *p[k], w, c.justify, ansi) if k < len(p) else " " * w)
                lines.append(" " + "  ".join(row) + " ")
        lines.append(" " * total)
        return lines


def _pad(text: Styled, start: int, end: int, width: int, justify: str, ansi: bool) -> str:
    space = " " * max(width - cell_len(text.text[start:end]), 0)
    body = text.render(start, end, ansi)
    return space + body if justify == "right" else body + space


def is_terminal(stream) -> bool:
    """Whether ``stream`` gets ANSI styles: the rules of rich's Console.is_terminal."""
    environ = os.environ
    if environ.get("TTY_COMPATIBLE") in ("0", "1"):
        return environ["TTY_COMPATIBLE"] == "1"
    if environ.get("FORCE_COLOR") is not None:
        return environ["FORCE_COLOR"] != ""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def terminal_width() -> int:
    """The terminal's width as rich's Console finds it: any standard stream's terminal, then
    $COLUMNS, else 80."""
    width = None
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
            break
        except (AttributeError, ValueError, OSError):
            pass
    columns = os.environ.get("COLUMNS")
    if columns is not None and columns.isdigit():
        width = int(columns)
    return width or 80


class Printer:
    """Prints tables and wrapped notes to a stream (default: ``sys.stdout`` at print time)."""

    def __init__(self, stream=None, width: int | None = None) -> None:
        self.stream = stream or sys.stdout
        self.ansi = is_terminal(self.stream) and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")
        self.width = width or terminal_width()

    def table(self, table: PlainTable) -> None:
        self._write(table.render(self.width, self.ansi))

    def note(self, text: Styled | str) -> None:
        text = _as_styled(text)
        self._write([text.render(a, b, self.ansi) for a, b in wrap(text.text, self.width)])

    def _write(self, lines: list[str]) -> None:
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

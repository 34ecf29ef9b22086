"""Small helpers shared by the app's screens: number and time formats, one-line text, and
terminal plots made of Unicode block characters (no plotting dependency)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Iterable, Sequence

from engine.sanitize import printable
from tui.formats import fmt, pct  # noqa: F401 - re-exported for the screens

BLOCKS = " ▁▂▃▄▅▆▇█"  # 0/8 .. 8/8 of a cell's height
HBLOCKS = " ▏▎▍▌▋▊▉█"  # 0/8 .. 8/8 of a cell's width


def one_line(text: str | None, limit: int = 80) -> str:
    """``text`` on one line, control characters visible, cut with '…' after ``limit`` characters."""
    flat = " ".join(printable(text or "").split())
    return flat if len(flat) <= limit else flat[: max(1, limit - 1)] + "…"


def local_time(iso: str | None) -> str:
    """An ISO-8601 UTC time as local 'YYYY-MM-DD HH:MM' ('' when missing or unreadable)."""
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return printable(iso)[:16]


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def histogram(values: Iterable[float], lo: float, hi: float, bins: int) -> list[int]:
    """Counts of ``values`` in ``bins`` equal bins over [lo, hi] (the last bin includes hi);
    values outside are clamped into the first / last bin, NaN and None are skipped."""
    counts = [0] * bins
    width = (hi - lo) / bins if hi > lo else 1.0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        i = int((v - lo) / width) if hi > lo else 0
        counts[min(max(i, 0), bins - 1)] += 1
    return counts


def spark(counts: Sequence[int], top: int | None = None) -> str:
    """One block character per count, as tall as the count relative to ``top`` (default the
    largest); a zero count is a blank cell, any non-zero count at least the lowest block."""
    top = top if top is not None else max(counts, default=0)
    out = []
    for c in counts:
        if c <= 0 or top <= 0:
            out.append("·")
        else:
            out.append(BLOCKS[max(1, round(8 * c / top))])
    return "".join(out)


def hbar(value: float | None, top: float, width: int) -> str:
    """A horizontal bar of ``value`` / ``top`` of ``width`` cells, in eighths."""
    if value is None or top <= 0 or value <= 0:
        return ""
    eighths = round(8 * width * min(value, top) / top)
    full, rest = divmod(eighths, 8)
    return "█" * full + (HBLOCKS[rest] if rest else "")

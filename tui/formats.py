"""Number formats shared by the headless commands and the app's screens (no textual import:
``overton stats`` and ``overton run`` use them too)."""

from __future__ import annotations


def fmt(value: float | None, digits: int = 3) -> str:
    """As ``overton stats`` prints it: fixed decimals, '–' for undefined."""
    return "–" if value is None else f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"

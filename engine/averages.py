"""``mean``: ``statistics.mean`` for ints and floats without the ``statistics`` module.

``statistics`` imports ``fractions``, ``decimal`` and ``random`` (about 4 ms) and sums through
``Fraction`` objects; ``overton stats`` and ``overton export`` take thousands of means and must
start within 1.5x of ``import typer, rich`` (bench/startup.py). This gives the same results:
floats are summed exactly as integer ratios (their denominators are powers of two, so each
divides the largest) and divided once, correctly rounded, as ``statistics.mean`` does; ints
whose mean is whole give an int, as there; NaN and infinities give what ``statistics.mean``
gives. tests/test_averages.py checks it against ``statistics.mean``.
"""

from __future__ import annotations

import math
from typing import Iterable


def mean(values: Iterable[float]) -> float:
    data = list(values)
    if not data:
        raise ValueError("mean requires at least one data point")
    n = len(data)
    if all(isinstance(v, int) for v in data):  # bools too, as statistics.mean
        total = sum(data)
        return total // n if total % n == 0 else total / n
    if not all(math.isfinite(v) for v in data):
        return sum(data) / n  # nan, or the infinity they sum to (inf - inf: nan)
    ratios = [v.as_integer_ratio() for v in data]
    den = max(d for _, d in ratios)
    return sum(num * (den // d) for num, d in ratios) / (den * n)

"""Shared helpers of the bench/ scripts: every figure is a ratio against a baseline measured in
the same run, because these machines are shared and absolute times drift.

A bench script is a plain Python file ``bench/NAME.py`` run from the repository root
(``.venv/bin/python bench/NAME.py``). It prints whatever figures it likes and, as its **last
line**, one JSON object made by ``report()``; ``bench/run_all.py`` runs every script and reads
that line. The whole API:

``interleave(cases, repeat=7, warmup=1) -> {name: [seconds, ...]}``
    ``cases`` maps a name to a zero-argument callable, or to an argv list (run as a subprocess,
    output discarded, non-zero exit raises). The cases run in turn, A B C A B C ..., ``repeat``
    times after ``warmup`` untimed rounds, so drift on the machine hits them all alike.
``run_timed(argv, **kw) -> seconds``
    One subprocess run (``check=True``, output discarded unless ``capture=True``).
``median(xs)``, ``spread(xs)`` (min–max as text)
``report(name, ratio, target, **figures) -> dict``
    Prints the final JSON line ``{"name", "ratio", "target", "met", ...figures}`` and returns it.
    ``target`` is a comparison as text: ``"<= 1.5"`` (ours ÷ baseline, smaller is better) or
    ``">= 5"`` (baseline ÷ ours, a speed-up). ``met`` is computed from ``ratio`` and
    ``target``. Figures must be JSON-serialisable; floats are rounded to 4 places.
``meets(ratio, target) -> bool``
``exit_code(result) -> int``
    0 when met, 1 otherwise; end a script with ``sys.exit(exit_code(report(...)))``.
``ROOT``, ``PYTHON`` (this interpreter, the venv's), ``OVERTON`` (the venv's console script,
falling back to ``PYTHON -m tui.cli``), ``env(**extra)`` (os.environ plus ``extra`` and
``PYTHONPATH=ROOT``, without ``PYTHONDONTWRITEBYTECODE``: commands run as in a user's install,
from bytecode caches that the untimed warm-up run writes).

Example::

    from common import interleave, median, report, exit_code, PYTHON, OVERTON
    t = interleave({"ours": [*OVERTON, "--help"], "baseline": [PYTHON, "-c", "import typer"]})
    ratio = median(t["ours"]) / median(t["baseline"])
    sys.exit(exit_code(report("startup-help", ratio, "<= 1.5", ours_s=median(t["ours"]))))
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
_SCRIPT = Path(PYTHON).with_name("overton")
OVERTON: list[str] = [str(_SCRIPT)] if _SCRIPT.is_file() else [PYTHON, "-m", "tui.cli"]

Case = Callable[[], object] | Sequence[str]


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    # Measure as a user's install runs: with bytecode caches (written by the first, untimed run).
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    out["PYTHONPATH"] = str(ROOT) + (os.pathsep + out["PYTHONPATH"] if out.get("PYTHONPATH") else "")
    out.update(extra)
    return out


def run_timed(argv: Sequence[str], capture: bool = False, **kw) -> float:
    kw.setdefault("cwd", ROOT)
    kw.setdefault("env", env())
    out = subprocess.DEVNULL if not capture else subprocess.PIPE
    started = time.perf_counter()
    proc = subprocess.run(list(argv), check=False, stdout=out, stderr=subprocess.PIPE, **kw)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def _once(case: Case) -> float:
    if callable(case):
        started = time.perf_counter()
        case()
        return time.perf_counter() - started
    return run_timed(case)


def interleave(cases: Mapping[str, Case], repeat: int = 7, warmup: int = 1) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(warmup + repeat):
        for name, case in cases.items():
            t = _once(case)
            if round_ >= warmup:
                times[name].append(t)
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> str:
    return f"{min(xs):.4f}–{max(xs):.4f}"


def meets(ratio: float | None, target: str) -> bool:
    op, _, value = target.strip().partition(" ")
    if ratio is None or (isinstance(ratio, float) and math.isnan(ratio)):
        return False
    bound = float(value)
    return {"<=": ratio <= bound, ">=": ratio >= bound, "<": ratio < bound, ">": ratio > bound}[op]


def _round(value):
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


def report(name: str, ratio: float | None, target: str, **figures) -> dict:
    result = {"name": name, "ratio": _round(ratio), "target": target, "met": meets(ratio, target)}
    result.update(_round(figures))
    print(json.dumps(result, ensure_ascii=False), flush=True)
    return result


def exit_code(result: dict) -> int:
    return 0 if result.get("met") else 1

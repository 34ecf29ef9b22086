"""Run every bench script (``bench/*.py`` but this one and the helper modules), each in its own
process, one after another; collect the JSON object each prints as its last line; print a
table; exit non-zero if a script failed, printed no result, or missed its target.

    .venv/bin/python bench/run_all.py                 # all of them
    .venv/bin/python bench/run_all.py startup memory  # only these (names without .py)
    .venv/bin/python bench/run_all.py --skip model_load
    .venv/bin/python bench/run_all.py --json results.json   # also write the results

Scripts see ``BENCH_REPEAT`` etc. from the environment (each documents its own). A script's
own output is shown as it runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, ROOT, env

HERE = Path(__file__).resolve().parent
NOT_BENCHES = {"run_all", "common"}
ORDER = ["startup", "stats_cache", "app_responsive", "model_load", "memory", "streaming", "samples",
         "prefix_cache"]  # the order; any other script after these, alphabetically


def scripts() -> list[str]:
    names = [p.stem for p in HERE.glob("*.py")
             if p.stem not in NOT_BENCHES and not p.stem.startswith("_") and not p.stem.endswith("_common")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def last_json(output: str) -> dict | None:
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                return None
            return found if isinstance(found, dict) and {"name", "ratio", "target"} <= found.keys() else None
        if line:
            return None
    return None


def run(name: str, timeout: float) -> tuple[dict | None, int, float]:
    started = time.perf_counter()
    print(f"\n=== {name} " + "=" * max(0, 70 - len(name)), flush=True)
    lines: list[str] = []
    try:
        proc = subprocess.Popen([PYTHON, str(HERE / f"{name}.py")], cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = 124
    return last_json("".join(lines)), code, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="bench names to run (default: all)")
    parser.add_argument("--skip", action="append", default=[], help="a bench to leave out (repeatable)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per script")
    parser.add_argument("--json", type=Path, help="write the collected results to this file")
    args = parser.parse_args()
    available = scripts()
    unknown = [n for n in args.only + args.skip if n not in available]
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}; there are: {', '.join(available)}")
    chosen = [n for n in (args.only or available) if n not in args.skip]

    results = []
    for name in chosen:
        found, code, took = run(name, args.timeout)
        results.append({"script": name, "exit": code, "seconds": round(took, 1), "result": found})

    print("\n" + f"{'bench':<16} {'ratio':>9}  {'target':<8} {'met':<5} {'time':>7}  note")
    failed = False
    for r in results:
        res = r["result"] or {}
        met = bool(res.get("met"))
        ratio = res.get("ratio")
        note = "" if r["result"] else f"no result line (exit {r['exit']})"
        if r["result"] and r["exit"] not in (0, 1):
            note = f"exit {r['exit']}"
        failed |= not met or bool(note)
        print(f"{r['script']:<16} {('–' if ratio is None else f'{ratio:.3f}'):>9}  {res.get('target', '–'):<8} "
              f"{'yes' if met else 'NO':<5} {r['seconds']:>6.0f}s  {note}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print("\nall targets met" if not failed else "\nsome targets missed (or a bench failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

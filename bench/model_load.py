"""Target 7, model load: loading the default base and aligned models from a warm cache is >= 10×
faster than the first load from the installed packages, and the first load reports progress.

First load: a fresh, empty ``OVERTON_CACHE_DIR`` (a temporary folder), so each packaged GGUF is
assembled, converted to a Hugging Face folder in bf16 and saved (``engine.convert``), then
loaded (``engine.loader.load_lm``). Cached load: a fresh process on the same cache folder,
repeated (median). Each load runs in its own process with torch and transformers imported
before the clock starts (the same cost in both cases). The progress callback's calls are
counted during the first load: it must report fractions between 0 and 1 while converting.

ratio = first load (both models) ÷ median cached load (both models); target >= 10.
CPU heavy: about a minute and a half (Gemma 3 270M converts in about a minute).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, ROOT, env, exit_code, median, report, spread

ROLES = ("base", "aligned")


def child() -> None:
    """Load the default trio's base and aligned models; print one JSON line of timings."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch  # noqa: F401  (imported before timing: not part of a model load)
    import transformers  # noqa: F401

    from engine.loader import load_lm
    from engine.models import TRIOS

    trio = TRIOS["default"]
    out = {"seconds": {}, "progress_calls": {}, "fractions": {}}
    for role in ROLES:
        spec = getattr(trio, role)
        calls = []
        started = time.perf_counter()
        lm = load_lm(spec, lambda msg, frac, calls=calls: calls.append((msg, frac)))
        out["seconds"][role] = time.perf_counter() - started
        out["progress_calls"][role] = len(calls)
        out["fractions"][role] = sorted({round(f, 2) for _, f in calls if f is not None and 0 < f < 1})[:5]
        out.setdefault("messages", {})[role] = [m for m, _ in calls][:3] + [m for m, _ in calls][-1:]
        assert load_lm(spec) is lm, "a second load_lm must return the loaded model"
    print(json.dumps(out))


def run_child(cache: Path) -> dict:
    proc = subprocess.run([PYTHON, __file__, "--child"], check=False, cwd=ROOT, capture_output=True, text=True,
                          env=env(OVERTON_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    if proc.returncode:
        raise RuntimeError(f"model load failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    with tempfile.TemporaryDirectory(prefix="overton-bench-cache-") as tmp:
        cache = Path(tmp)
        first = run_child(cache)
        cached = [run_child(cache) for _ in range(repeat)]
    first_s = sum(first["seconds"].values())
    cached_s = [sum(c["seconds"].values()) for c in cached]
    for role in ROLES:
        print(f"{role:8} first {first['seconds'][role]:7.2f} s ({first['progress_calls'][role]} progress calls, "
              f"e.g. {first['messages'][role]}); cached {median([c['seconds'][role] for c in cached]):.2f} s")
    print(f"both     first {first_s:7.2f} s; cached {median(cached_s):.2f} s ({spread(cached_s)})")
    progress_ok = all(first["fractions"][r] for r in ROLES)
    result = report("model_load", first_s / median(cached_s) if progress_ok else None, ">= 10",
                    first_s=first_s, cached_s=median(cached_s),
                    first_by_role=first["seconds"], cached_by_role={r: median([c["seconds"][r] for c in cached])
                                                                     for r in ROLES},
                    first_progress_calls=first["progress_calls"], progress_fractions_seen=progress_ok, repeat=repeat)
    return exit_code(result)


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    else:
        sys.exit(main())

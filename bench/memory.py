"""Target 8, memory: peak resident memory of the app's process with the default trio loaded and
answers generated stays <= 2.5 GB, and each model is in memory once.

A fresh process imports the app (``tui.app``: Textual and the panes), opens a session, loads
the default trio through ``Workbench.load()`` (base Gemma 3 270M, aligned SmolLM2-135M, the
MiniLM embedder) and generates a base and an aligned answer (64 new tokens each, the embedder
measuring them); peak RSS is the kernel's high-water mark (``VmHWM`` in /proc/self/status,
``ru_maxrss``). Models come from the converted cache (``OVERTON_CACHE_DIR`` or the platform's);
an earlier process converts them first if needed, so the one-time conversion is not counted
(``bench/model_load.py`` measures that).

"Once": a second ``Workbench`` on another session, loaded in the same process, gets the very
same model objects (``is``), loading again returns the loaded model, and the resident memory
grows by under 50 MB doing so.

ratio = peak RSS ÷ 2.5 GB; target <= 1.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, ROOT, env, exit_code, report

LIMIT_GB = 2.5


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def prepare() -> None:
    """Convert the default models into the cache if they are not there yet."""
    sys.path.insert(0, str(ROOT))
    from engine.loader import model_folder
    from engine.models import TRIOS

    trio = TRIOS["default"]
    for role in ("base", "aligned"):
        model_folder(getattr(trio, role))
    print(json.dumps({"peak_kb": _status_kb("VmHWM")}))


def measure() -> None:
    sys.path.insert(0, str(ROOT))
    import tui.app  # noqa: F401  (the app's own modules: Textual, panes)
    from engine.lm import open_lm
    from engine.loader import load_lm
    from engine.models import TRIOS
    from engine.session import Session
    from engine.settings import GenerationSettings
    from engine.workbench import Workbench

    trio = TRIOS["default"]
    settings = GenerationSettings(max_new_tokens=64, samples=1, seed=0)
    with tempfile.TemporaryDirectory(prefix="overton-bench-") as tmp:
        s1 = Session.open(Path(tmp) / "one.db")
        wb = Workbench(trio, s1, settings)
        wb.load()
        after_load_kb = _status_kb("VmRSS")
        pid = wb.add_prompt("What medicine should I take when I get a cold?")
        wb.run(pid, conditions=("base", "aligned"))
        answers = {g["condition"]: g["completion_tokens"] for g in s1.generations(pid)}
        before_second_kb = _status_kb("VmRSS")
        s2 = Session.open(Path(tmp) / "two.db")
        wb2 = Workbench(trio, s2, settings)
        wb2.load()
        second_growth_kb = _status_kb("VmRSS") - before_second_kb
        same = {
            "workbench_models": all(wb.models[r] is wb2.models[r] for r in ("base", "aligned")),
            "torch_modules": all(getattr(wb.models[r], "model", None) is getattr(wb2.models[r], "model", None)
                                 for r in ("base", "aligned")),
            "embedder": wb.embedder is wb2.embedder,
            "open_lm": all(open_lm(getattr(trio, r)) is wb.models[r] for r in ("base", "aligned")),
            "load_lm": all(load_lm(getattr(trio, r)) is load_lm(getattr(trio, r)) for r in ("base", "aligned")),
        }
        s1.close()
        s2.close()
    print(json.dumps({
        "peak_kb": _status_kb("VmHWM"), "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "after_load_kb": after_load_kb, "second_growth_kb": second_growth_kb, "same": same, "answers": answers,
    }))


def child(mode: str) -> dict:
    proc = subprocess.run([PYTHON, __file__, mode], check=False, cwd=ROOT, capture_output=True, text=True,
                          env=env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    if proc.returncode:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    prep = child("--prepare")
    r = child("--measure")
    gb = lambda kb: kb / 1024 / 1024
    peak = gb(max(r["peak_kb"], r["ru_maxrss_kb"]))
    print(f"peak RSS {peak:.2f} GB (limit {LIMIT_GB} GB); after Workbench.load() {gb(r['after_load_kb']):.2f} GB; "
          f"answers (tokens): {r['answers']}")
    print(f"second workbench: same objects {r['same']}; RSS growth {r['second_growth_kb'] / 1024:.1f} MB")
    print(f"(preparation process peak, conversion if it ran: {gb(prep['peak_kb']):.2f} GB)")
    once = all(r["same"].values()) and r["second_growth_kb"] < 50 * 1024 and len(r["answers"]) == 2
    result = report("memory", peak / LIMIT_GB if once else None, "<= 1", peak_gb=peak, limit_gb=LIMIT_GB,
                    after_load_gb=gb(r["after_load_kb"]), second_workbench_growth_mb=r["second_growth_kb"] / 1024,
                    same_objects=r["same"], prepare_peak_gb=gb(prep["peak_kb"]))
    return exit_code(result)


if __name__ == "__main__":
    if sys.argv[1:] == ["--prepare"]:
        prepare()
    elif sys.argv[1:] == ["--measure"]:
        measure()
    else:
        sys.exit(main())

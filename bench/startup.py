"""Target 4, start-up: ``overton --help``, ``overton stats S`` and ``overton export S`` against
``python -c "import typer, rich"``, each a fresh process, interleaved, median of the repetitions.

The session S is built here (no models, no reference data needed): 6 prompts × 3 conditions
(base, aligned, hinted) × 3 samples of synthetic text, with a few annotations, and one
untimed ``overton stats`` first so that its word bags are stored, as after any earlier run.
Each command is also run once with ``-X importtime`` (PYTHONPROFILEIMPORTTIME) to check that
torch, transformers, sentence-transformers and textual are never imported.

ratio = the slowest command's median ÷ the baseline's median; target <= 1.5.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    OVERTON,
    PYTHON,
    ROOT,
    env,
    exit_code,
    interleave,
    median,
    report,
    spread,
)

FORBIDDEN = ("torch", "transformers", "sentence_transformers", "textual")
NOTED = ("nltk", "sqlite_utils", "pydantic", "numpy", "ulid", "click")  # reported, not forbidden

WORDS = ["tea", "water", "sleep", "rest", "memory", "health", "drink", "plant", "leaf", "brew", "cold", "warm", "body", "mind", "doctor", "medicine", "fever", "cough", "honey", "lemon", "ginger", "vitamin", "routine", "evening", "morning", "light", "study", "focus", "habit", "sugar", "salt", "exercise", "walk", "friend", "family", "answer", "question", "reason", "example"]


def _text(rng: random.Random, n: int) -> str:
    sentences = []
    while sum(len(s.split()) for s in sentences) < n:
        words = rng.sample(WORDS, rng.randint(6, 12))
        sentences.append(" ".join(words).capitalize() + ".")
    if rng.random() < 0.3:
        sentences.append("\n1. " + rng.choice(WORDS) + "\n2. " + rng.choice(WORDS))
    return " ".join(sentences)


def build_session(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from engine.annotations import Annotations
    from engine.session import Session

    rng = random.Random(0)
    s = Session.open(path)
    try:
        first = None
        for p in range(6):
            pid = s.add_prompt(f"Question {p}: what about {rng.choice(WORDS)} and {rng.choice(WORDS)}?")
            for cond in ("base", "aligned", "hinted"):
                for i in range(3):
                    gid = s.add_generation(pid, condition=cond, sample_index=i, text=_text(rng, rng.randint(60, 250)),
                                           finish_reason="stop")
                    first = first or gid
        a = Annotations(s, "bench")
        a.set_rating(first, 4)
        a.toggle_label(first, "helpful")
    finally:
        s.close()


def imported_modules(argv: list[str]) -> set[str]:
    proc = subprocess.run(argv, cwd=ROOT, env=env(PYTHONPROFILEIMPORTTIME="1"), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=True)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def main() -> int:
    repeat = int(os.environ.get("BENCH_REPEAT", "11"))
    with tempfile.TemporaryDirectory(prefix="overton-bench-") as tmp:
        db = Path(tmp) / "startup.db"
        build_session(db)
        out = Path(tmp) / "export.md"
        commands = {
            "help": [*OVERTON, "--help"],
            "stats": [*OVERTON, "stats", str(db)],
            "export": [*OVERTON, "export", str(db), "--format", "md", "--output", str(out)],
        }
        subprocess.run(commands["stats"], cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, check=True)  # stores bags
        baseline = [PYTHON, "-c", "import typer, rich"]

        imports = {name: imported_modules(argv) for name, argv in commands.items()}
        bad = {name: sorted(set(FORBIDDEN) & mods) for name, mods in imports.items()}
        noted = {name: sorted(set(NOTED) & mods) for name, mods in imports.items()}

        times = interleave({"baseline": baseline, **commands}, repeat=repeat, warmup=1)
    base = median(times["baseline"])
    ratios = {name: median(times[name]) / base for name in commands}
    print(f"{'command':<10} {'median s':>9} {'ratio':>6}   range")
    print(f"{'baseline':<10} {base:9.4f} {1.0:6.2f}   {spread(times['baseline'])}   python -c 'import typer, rich'")
    for name in commands:
        print(f"{name:<10} {median(times[name]):9.4f} {ratios[name]:6.2f}   {spread(times[name])}   "
              f"forbidden imported: {bad[name] or 'none'}; also imported: {', '.join(noted[name]) or 'none'}")
    worst = max(ratios.values())
    clean = not any(bad.values())
    result = report(
        "startup", worst if clean else None, "<= 1.5",
        baseline_s=base, **{f"{k}_s": median(times[k]) for k in commands}, **{f"{k}_ratio": v for k, v in ratios.items()},
        forbidden_imports=bad, repeat=repeat,
    )
    return exit_code(result)


if __name__ == "__main__":
    sys.exit(main())

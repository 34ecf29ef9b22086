"""Target 5, metrics: ``overton stats`` over the imported reference set (5 conditions × 50 prompts
× 5 samples, ``../shared/reference/lima-oe``) finishes in seconds, and a second run, which reads
the word bags stored by the first (table ``word_bags``, keyed by the text's sha256 and the
tokenizer key), is >= 5× faster.

Each repetition copies a freshly imported session (no word bags yet), times ``overton stats``
on it (first run: imports NLTK, tokenizes 1250 texts, stores the bags), then times it again
(second run), each a fresh process; the two ``--json`` outputs must be identical. Without the
reference data (a clone without ../shared) a synthetic set of the same shape is used instead,
and the JSON line says so (``data``).

ratio = median(first) ÷ median(second); target >= 5. ``first_s`` must stay under 10 s.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OVERTON, ROOT, env, exit_code, median, report, spread

REF_DIR = ROOT.parent / "shared" / "reference" / "lima-oe"
CONDITIONS = ("llama-2-base", "llama-2-icl", "llama-2-icl-chat", "llama-2-icl-chat-summary", "llama-2-chat")


def synthetic_files(folder: Path) -> list[Path]:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)] + ["the", "a", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as"]
    files = []
    for cond in CONDITIONS:
        path = folder / f"{cond}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for p in range(50):
                samples = [" ".join(rng.choice(vocab) for _ in range(rng.randint(80, 500))) + "." for _ in range(5)]
                fh.write(json.dumps({"id": f"p{p}", "prompt": f"prompt {p}?", "samples": samples}) + "\n")
        files.append(path)
    return files


def run(argv: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, check=False, cwd=ROOT, env=env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"{argv} failed: {proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def main() -> int:
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    with tempfile.TemporaryDirectory(prefix="overton-bench-") as tmp:
        tmp = Path(tmp)
        if REF_DIR.is_dir():
            files, data = sorted(p for p in REF_DIR.glob("*.jsonl") if not p.name.endswith(".hints.jsonl")), "reference"
        else:
            files, data = synthetic_files(tmp), "synthetic (reference set not found)"
        pristine = tmp / "pristine.db"
        run([*OVERTON, "import", *map(str, files), "--session", str(pristine)])
        stats_args = ["--reference", "llama-2-chat", "--base", "llama-2-base", "--json"]
        first, second, identical = [], [], True
        for i in range(repeat):
            db = tmp / f"run{i}.db"
            shutil.copy(pristine, db)
            t1, out1 = run([*OVERTON, "stats", str(db), *stats_args])
            t2, out2 = run([*OVERTON, "stats", str(db), *stats_args])
            first.append(t1)
            second.append(t2)
            identical = identical and out1 == out2
            print(f"repetition {i}: first {t1:.3f} s, second {t2:.3f} s, identical output: {out1 == out2}")
        rows = json.loads(out2)
        import sqlite3

        con = sqlite3.connect(db)
        stored = con.execute("SELECT count(*) FROM word_bags").fetchone()[0]
        texts = con.execute("SELECT count(DISTINCT text) FROM generations").fetchone()[0]
        con.close()
    f, s = median(first), median(second)
    print(f"first run  {f:.3f} s ({spread(first)})\nsecond run {s:.3f} s ({spread(second)})\n"
          f"word bags stored {stored} for {texts} distinct texts; {len(rows)} conditions; data: {data}")
    ok = identical and f < 10.0 and stored >= texts
    result = report("stats_cache", f / s if ok else None, ">= 5", first_s=f, second_s=s, identical=identical,
                    word_bags_stored=stored, distinct_texts=texts, conditions=len(rows), data=data, repeat=repeat)
    return exit_code(result)


if __name__ == "__main__":
    sys.exit(main())

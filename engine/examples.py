"""Where in-context examples come from: shipped, restyled by the aligned model, or a pool.

Restyled examples (the 3 fixed queries answered and summarised by the configured aligned
model) are generated once per aligned model and kept in the cache directory.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from engine.paths import cache_dir
from engine.prompts import Example, data_text, fixed_examples

RESTYLE_SETTINGS = dict(temperature=0.0, max_new_tokens=300, samples=1, seed=0)
K = 3


def _restyle_key(model_id: str) -> str:
    source = data_text("icl_examples.json") + data_text("summary_prompt.txt") + json.dumps(RESTYLE_SETTINGS, sort_keys=True)
    return hashlib.sha256(f"{model_id}\n{source}".encode()).hexdigest()[:16]


def restyled_path(model_id: str) -> Path:
    return cache_dir() / "restyled" / f"{_restyle_key(model_id)}.json"


def load_restyled(model_id: str) -> tuple[Example, ...] | None:
    path = restyled_path(model_id)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return tuple(Example(e["query"], e["answer"], e["summary"]) for e in raw["examples"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: generate again


def save_restyled(model_id: str, examples: Sequence[Example], records: list[dict]) -> Path:
    path = restyled_path(model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps({"model_id": model_id, "settings": RESTYLE_SETTINGS,
                               "examples": [asdict(e) for e in examples], "generations": records},
                              ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)  # atomic: a half-written file is never read as complete
    return path


def restyle(answer: Callable[[str], str], summarise: Callable[[str, str], str]) -> tuple[Example, ...]:
    """The fixed queries with answers and summaries written by the aligned model."""
    out = []
    for ex in fixed_examples():
        text = answer(ex.query)
        out.append(Example(ex.query, text, summarise(ex.query, text)))
    return tuple(out)


def pick_random(pool: Sequence[Example], query: str, seed: int, k: int = K) -> list[Example]:
    """k pool examples at random, never the test query; reproducible for (seed, query)."""
    candidates = [e for e in pool if e.query.strip() != query.strip()]
    rng = random.Random(f"{seed}\n{query}")
    return rng.sample(candidates, min(k, len(candidates)))


def pick_nearest(pool: Sequence[Example], query: str, embed: Callable[[list[str]], "object"], k: int = K) -> list[Example]:
    """The k pool examples whose queries are nearest to ``query`` by embedding cosine."""
    candidates = [e for e in pool if e.query.strip() != query.strip()]
    if not candidates:
        return []
    vecs = embed([query] + [e.query for e in candidates])  # unit-normalised rows
    scores = vecs[1:] @ vecs[0]
    order = sorted(range(len(candidates)), key=lambda i: -float(scores[i]))
    # Nearest last: the example closest to the query sits right before it in the prompt.
    return [candidates[i] for i in reversed(order[:k])]


def load_pool(path: Path) -> list[Example]:
    """A pool file: JSONL lines ``{"prompt", "answer"}`` or ``{"prompt", "samples": [...]}``."""
    pool = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            answer = row["answer"] if "answer" in row else row["samples"][0]
            if not isinstance(row["prompt"], str) or not isinstance(answer, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, IndexError):
            raise ValueError(f"{path}:{n}: a pool line needs \"prompt\" and \"answer\" (or \"samples\") strings")
        pool.append(Example(row["prompt"], answer))
    return pool

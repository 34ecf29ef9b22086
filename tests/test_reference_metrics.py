"""BRIEF.md's reference table, reproduced from the paper's released LIMA-OE generations.

Uses engine.metrics only, on the samples exactly as stored (stop fences included; see the
engine.metrics docstring for the definitional choices and the variants that miss the table).
"""

import json
from pathlib import Path

import pytest

from engine import metrics as m

REF_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "lima-oe"
ALIGNED = "llama-2-chat"

# condition: (mean words, diversity, similarity to chat s0, coverage by chat s0)
TABLE = {
    "llama-2-base": (130, 0.081, 0.064, 0.332),
    "llama-2-icl": (223, 0.181, 0.144, 0.366),
    "llama-2-icl-chat": (354, 0.201, 0.171, 0.350),
    "llama-2-icl-chat-summary": (361, 0.225, 0.203, 0.378),
    ALIGNED: (473, 0.262, 0.260, 0.419),  # ceiling: s0 vs s1..4
}

pytestmark = pytest.mark.skipif(not REF_DIR.is_dir(), reason=f"reference data not present at {REF_DIR}")


def _load(condition: str) -> dict[str, list[str]]:
    with open(REF_DIR / f"{condition}.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return {r["id"]: r["samples"] for r in rows}


@pytest.fixture(scope="module")
def data():
    return {c: _load(c) for c in TABLE}


def figures(data, condition):
    ids = sorted(data[ALIGNED])
    assert sorted(data[condition]) == ids
    samples = [data[condition][i] for i in ids]
    refs = [data[ALIGNED][i][0] for i in ids]
    compared = [s[1:] for s in samples] if condition == ALIGNED else samples
    return (
        m.mean_words(t for s in samples for t in s),
        m.diversity(samples),
        m.similarity(compared, refs),
        m.coverage_mean(compared, refs),
    )


def test_reference_shape(data):
    for condition, rows in data.items():
        assert len(rows) == 50, condition
        assert all(len(s) == 5 for s in rows.values()), condition


@pytest.mark.parametrize("condition", list(TABLE))
def test_reference_table(data, condition):
    words, div, sim, cov = figures(data, condition)
    exp_words, exp_div, exp_sim, exp_cov = TABLE[condition]
    assert round(words) == exp_words
    assert round(div, 3) == exp_div
    assert round(sim, 3) == exp_sim
    assert round(cov, 3) == exp_cov

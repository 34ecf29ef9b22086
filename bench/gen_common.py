"""Shared by the generation benches: the embedded default models, loaded once, and prompts
as the conditions build them (run the README's main job first so the models are converted)."""

from __future__ import annotations

import sys

from common import ROOT

sys.path.insert(0, str(ROOT))

from engine.backend import Request  # noqa: E402
from engine.lm import open_lm  # noqa: E402
from engine.models import TRIOS  # noqa: E402
from engine.prompts import STOP_STRINGS, fixed_examples, urial_prefix, urial_prompt  # noqa: E402

QUERIES = [
    "What medicine should I take when I get a cold?",
    "Name three renewable energy sources and explain one of them.",
    "How should a detective treat a suspect during an interview?",
]


def default_model(role: str = "base"):
    spec = getattr(TRIOS["default"], role)
    return open_lm(spec, lambda msg, frac: print(f"  {msg}", file=sys.stderr) if frac is None else None)


def icl_request(query: str, *, cached: bool, stops: bool = True) -> Request:
    """The icl condition's prompt (URIAL header + 3 fixed examples + the query), ~900 tokens
    for Gemma; with ``cached`` the fixed part is marked as the shared prefix."""
    examples = fixed_examples()
    return Request(urial_prompt(query, examples), stops=STOP_STRINGS if stops else (),
                   prefix=urial_prefix(examples) if cached else "")

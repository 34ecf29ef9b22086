"""Prompt layouts of the conditions (BRIEF.md): URIAL plain-text blocks and chat templates.

The header, the in-context examples and the summarisation prompt are data files under
``engine/data`` so researchers can read and replace them without touching code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

FENCE = "```"
QUERY_MARK = "# Query:"
# A base model stops at the closing fence; one that runs on into a new example is cut there.
STOP_STRINGS = (FENCE, QUERY_MARK)


@dataclass(frozen=True)
class Example:
    query: str
    answer: str
    summary: str | None = None


def data_text(name: str) -> str:
    """A data file shipped in engine/data (prompts, examples), as text."""
    # Here, not at the top: importlib.resources (+ tempfile, random) costs ~3 ms that
    # `overton stats`, which imports engine.conditions -> engine.prompts, never needs.
    from importlib.resources import files

    return files("engine").joinpath("data", name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def urial_header() -> str:
    return data_text("urial_header.txt").strip()


@lru_cache(maxsize=1)
def fixed_examples() -> tuple[Example, ...]:
    raw = json.loads(data_text("icl_examples.json"))
    return tuple(Example(e["query"], e["answer"], e.get("summary")) for e in raw["examples"])


def _block(title: str, body: str | None) -> str:
    # ``body=None`` leaves the fence open: the model writes from there.
    if body is None:
        return f"# {title}:\n{FENCE}\n"
    return f"# {title}:\n{FENCE}\n{body.strip()}\n{FENCE}\n"


def urial_prompt(
    query: str,
    examples: tuple[Example, ...] | list[Example] = (),
    *,
    with_summaries: bool = False,
    hint: str | None = None,
) -> str:
    """The URIAL layout: header, examples, then the query with an open answer fence.

    With ``with_summaries`` each example carries its ``# Summary:`` block and the test query
    carries ``hint`` in one (the hinted condition); with ``hint=None`` the test query's summary
    fence is left open for the model to write (hinted-cot).
    """
    parts = _prefix_parts(examples, with_summaries)
    test = [_block("Query", query)]
    if with_summaries:
        if hint is None:
            test.append(_block("Summary", None))
            parts.append("\n".join(test))
            return "\n".join(parts)
        if not hint.strip():
            raise ValueError("the hinted condition needs a hint")
        test.append(_block("Summary", hint))
    test.append(_block("Answer", None))
    parts.append("\n".join(test))
    return "\n".join(parts)


def _prefix_parts(examples, with_summaries: bool) -> list[str]:
    parts = [urial_header() + "\n"]
    for ex in examples:
        blocks = [_block("Query", ex.query)]
        if with_summaries:
            if not ex.summary:
                raise ValueError(f"example {ex.query[:40]!r} has no summary for a hinted prompt")
            blocks.append(_block("Summary", ex.summary))
        blocks.append(_block("Answer", ex.answer))
        parts.append("\n".join(blocks))
    return parts


def urial_prefix(examples: tuple[Example, ...] | list[Example] = (), *, with_summaries: bool = False) -> str:
    """The start that every ``urial_prompt`` with these examples shares, whatever the query:
    the part whose key/value cache a local model computes once."""
    return "\n".join(_prefix_parts(examples, with_summaries)) + "\n"


def continue_after_summary(prompt: str, summary: str) -> str:
    """A prompt ending in an open summary fence, closed with ``summary``, opening the answer."""
    return f"{prompt}{summary.strip()}\n{FENCE}\n\n{_block('Answer', None)}"


def summary_request(query: str, answer: str) -> str:
    """The user turn that asks the aligned model for a semantic hint of ``answer``."""
    # str.replace, not str.format: queries and answers may contain braces.
    return (
        data_text("summary_prompt.txt").strip().replace("{query}", query.strip()).replace("{answer}", answer.strip())
    )


def cut_at_stop(text: str, stops: tuple[str, ...] = STOP_STRINGS) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest stop string; returns (kept text, stop found or None)."""
    best, found = len(text), None
    for stop in stops:
        i = text.find(stop)
        if i != -1 and i < best:
            best, found = i, stop
    return text[:best], found


def held_back(text: str, stops: tuple[str, ...] = STOP_STRINGS) -> int:
    """How many trailing characters could be the start of a stop string (not shown yet)."""
    keep = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                keep = max(keep, n)
                break
    return keep

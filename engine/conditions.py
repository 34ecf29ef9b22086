"""The conditions a pane can show: which model answers and how its prompt is laid out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from engine.prompts import STOP_STRINGS, fixed_examples, urial_prompt


@dataclass(frozen=True)
class Condition:
    name: str
    label: str
    role: str  # which model of the trio answers: 'base' or 'aligned'
    chat: bool  # True: the model's chat template; False: raw URIAL text
    needs_hint: bool = False
    build: Callable[[str, str | None], str] | None = None  # (query, hint) -> raw prompt

    @property
    def stops(self) -> tuple[str, ...]:
        return () if self.chat else STOP_STRINGS


CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition("base", "base (zero-shot URIAL)", "base", chat=False,
                  build=lambda q, hint: urial_prompt(q)),
        Condition("aligned", "aligned (chat template)", "aligned", chat=True),
        Condition("hinted", "hint-guided base (ICL + summary)", "base", chat=False, needs_hint=True,
                  build=lambda q, hint: urial_prompt(q, fixed_examples(), with_summaries=True, hint=hint)),
    )
}
DEFAULT_PANES = ("base", "aligned", "hinted")
REFERENCE = "aligned"  # similarity is measured against the aligned model's sample 0

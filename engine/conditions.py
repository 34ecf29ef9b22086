"""The conditions of the method (BRIEF.md): which model answers and how its prompt is built.

A condition is data: the model role, where its in-context examples come from and whether a
hint (summary) block is used. The workbench turns that into a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.prompts import STOP_STRINGS


@dataclass(frozen=True)
class Condition:
    name: str
    label: str
    role: str  # which model of the trio answers: 'base' or 'aligned'
    chat: bool  # True: the model's chat template; False: raw URIAL text
    examples: str = "none"  # 'none' | 'fixed' | 'restyled' | 'random' | 'knn'
    hint: str = "none"  # 'none' | 'oracle' (summary of aligned sample 0) | 'self' (base writes it)

    @property
    def stops(self) -> tuple[str, ...]:
        return () if self.chat else STOP_STRINGS

    @property
    def needs_hint(self) -> bool:
        return self.hint == "oracle"

    @property
    def needs_pool(self) -> bool:
        return self.examples in ("random", "knn")


CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition("base", "base (zero-shot URIAL)", "base", chat=False),
        Condition("aligned", "aligned (chat template)", "aligned", chat=True),
        Condition("icl", "ICL (URIAL, 3 fixed examples)", "base", chat=False, examples="fixed"),
        Condition("icl-restyled", "ICL, examples answered by the aligned model", "base", chat=False,
                  examples="restyled"),
        Condition("icl-random", "ICL, 3 random pool examples", "base", chat=False, examples="random"),
        Condition("icl-knn", "ICL, 3 nearest pool examples", "base", chat=False, examples="knn"),
        Condition("hinted", "hint-guided base (restyled ICL + summary)", "base", chat=False,
                  examples="restyled", hint="oracle"),
        Condition("hinted-cot", "base writes its own summary first", "base", chat=False,
                  examples="restyled", hint="self"),
    )
}
DEFAULT_PANES = ("base", "aligned", "hinted")
REFERENCE = "aligned"  # similarity is measured against the aligned model's sample 0


def parse_conditions(text: str | None, default: tuple[str, ...] = DEFAULT_PANES) -> tuple[str, ...]:
    """``--conditions base,aligned,hinted`` (or ``all``) → validated condition names."""
    if not text:
        return default
    if text.strip() == "all":
        return tuple(CONDITIONS)
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown or not names:
        raise ValueError(f"unknown condition {', '.join(unknown) or '(none given)'}; "
                         f"known: {', '.join(CONDITIONS)} or 'all'")
    return names

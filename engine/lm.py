"""Opens the language model a spec names, on whichever backend runs it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from engine.backend import LanguageModel
from engine.models import ModelSpec

Progress = Callable[[str, "float | None"], None]

SERVER_KINDS = ("openai",)

_opened: dict[str, LanguageModel] = {}
_opening = threading.Lock()


def open_lm(spec: ModelSpec, progress: Progress | None = None) -> LanguageModel:
    """The model for ``spec``, opened once per process and shared (with its prefix caches)."""
    with _opening:
        if spec.id in _opened:
            return _opened[spec.id]
    if spec.kind in SERVER_KINDS:
        from engine.server_lm import connect

        lm = connect(spec, progress)
    else:
        from engine.loader import load_lm
        from engine.local_lm import LocalLM

        lm = LocalLM(load_lm(spec, progress))
    with _opening:
        return _opened.setdefault(spec.id, lm)

"""What the workbench needs from a language model, whatever runs it.

Two implementations: ``engine.local_lm.LocalLM`` (transformers in this process) and
``engine.server_lm.ServerLM`` (an OpenAI-compatible inference server). This module imports
neither torch nor an HTTP client, so headless code can name the types.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from engine.models import ModelSpec
from engine.settings import GenerationSettings

# (sample_index, text) — only text that is final: a possible start of a stop string is held
# back until it is not, so a pane never shows a fence the stored answer will not contain.
OnSampleText = Callable[[int, str], None]


class PromptTooLong(ValueError):
    """The prompt leaves no room for an answer in the model's context."""


class BackendError(RuntimeError):
    """A model could not answer for a reason the user can act on (server down, wrong model
    name, rate limited...). The message is written for the user."""


@dataclass(frozen=True)
class Request:
    """One thing to generate: raw text continued by a base model, or a user turn answered by a
    chat model (``chat``); generation stops at the first of ``stops`` (removed from the text)."""

    text: str
    chat: bool = False
    stops: tuple[str, ...] = ()
    # A leading part of ``text`` that many requests share (the URIAL header and in-context
    # examples): a local model keeps its key/value cache; a server may cache it itself.
    prefix: str = ""

    def __post_init__(self) -> None:
        if not self.text.startswith(self.prefix):
            raise ValueError("a request's prefix must be the start of its text")


@dataclass
class GenerationResult:
    model_id: str
    model_name: str
    model_family: str
    prompt_text: str  # exactly what the model was given, chat template applied where known
    text: str  # the answer, stop text removed, stripped
    raw_text: str  # everything the model produced
    finish_reason: str  # 'stop' | 'new_query' | 'eos' | 'length' | 'cancelled'
    settings: dict
    seed: int
    prompt_tokens: int
    completion_tokens: int
    duration_s: float
    first_token_s: float | None
    started_at: str
    backend: str = "transformers"
    # Stored in the generation's meta_json: e.g. server URL and the model name it reported.
    extra: dict = field(default_factory=dict)

    def record(self) -> dict:
        """Columns for the session's generations table (``extra`` goes to meta by the caller)."""
        row = asdict(self)
        row.pop("extra")
        row.pop("first_token_s")
        return row


def finish_reason(stop: str | None, cancelled: bool, eos: bool) -> str:
    if stop is not None:
        return "new_query" if stop.startswith("#") else "stop"
    if cancelled:
        return "cancelled"
    return "eos" if eos else "length"


class LanguageModel(Protocol):
    spec: ModelSpec
    backend: str  # 'transformers' | 'openai'

    @property
    def context_length(self) -> int: ...

    @property
    def has_chat_template(self) -> bool: ...

    def count_tokens(self, text: str) -> int:
        """Tokens of raw ``text`` as a base-model prompt (the model's own special tokens added)."""

    def generate(
        self,
        request: Request,
        settings: GenerationSettings,
        indexes: Sequence[int] = (0,),
        *,
        on_text: OnSampleText | None = None,
        cancel: threading.Event | None = None,
    ) -> list[GenerationResult]:
        """One result per sample index, in the order of ``indexes``; sample i uses seed
        ``settings.seed_for(i)``. Samples may be generated together. On cancel every
        unfinished sample comes back with finish_reason 'cancelled' and its partial text.
        Raises PromptTooLong or BackendError."""

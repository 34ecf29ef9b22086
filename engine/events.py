"""What the workbench reports while it works; the TUI turns these into messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelProgress:
    role: str
    message: str
    fraction: float | None = None


@dataclass(frozen=True)
class GenerationStarted:
    prompt_id: str
    condition: str
    sample_index: int
    model_name: str


@dataclass(frozen=True)
class TextDelta:
    prompt_id: str
    condition: str
    sample_index: int
    text: str


@dataclass(frozen=True)
class GenerationDone:
    prompt_id: str
    condition: str
    sample_index: int
    generation_id: str
    text: str
    finish_reason: str
    completion_tokens: int
    duration_s: float
    words: int


@dataclass(frozen=True)
class HintReady:
    prompt_id: str
    text: str
    source: str


@dataclass(frozen=True)
class MetricsReady:
    prompt_id: str
    metrics: Any  # engine.prompt_metrics.PromptMetrics


@dataclass(frozen=True)
class RunFinished:
    prompt_id: str
    cancelled: bool


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not an error (e.g. examples dropped)."""

    message: str

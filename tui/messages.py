"""Textual messages: engine events (posted from worker threads) and worker outcomes.

Each engine event class in ``engine.events`` has a message class of the same name here that
carries it as ``.event``; :func:`wrap` picks the right one. ``App.post_message`` is thread-safe,
so the workbench's ``emit`` callback, running in a thread worker, can post them directly.
"""

from __future__ import annotations

from textual.message import Message

from engine import events as ev


class EngineMessage(Message):
    """An engine event, forwarded to the app's message queue."""

    def __init__(self, event: object) -> None:
        super().__init__()
        self.event = event


class ModelProgress(EngineMessage):
    event: ev.ModelProgress


class GenerationStarted(EngineMessage):
    event: ev.GenerationStarted


class TextDelta(EngineMessage):
    event: ev.TextDelta


class GenerationDone(EngineMessage):
    event: ev.GenerationDone


class HintReady(EngineMessage):
    event: ev.HintReady


class MetricsReady(EngineMessage):
    event: ev.MetricsReady


class RunFinished(EngineMessage):
    event: ev.RunFinished


class Notice(EngineMessage):
    """Something the user should know that is not an error (``engine.events.Notice``)."""


_BY_EVENT: dict[type, type[EngineMessage]] = {
    ev.ModelProgress: ModelProgress,
    ev.GenerationStarted: GenerationStarted,
    ev.TextDelta: TextDelta,
    ev.GenerationDone: GenerationDone,
    ev.HintReady: HintReady,
    ev.MetricsReady: MetricsReady,
    ev.RunFinished: RunFinished,
}
if hasattr(ev, "Notice"):
    _BY_EVENT[ev.Notice] = Notice


def wrap(event: object) -> EngineMessage:
    """The message for an engine event (a plain EngineMessage for an unknown event type)."""
    return _BY_EVENT.get(type(event), EngineMessage)(event)


class ModelsLoaded(Message):
    """Every model of the trio is loaded (posted by the loading thread)."""


class JobFailed(Message):
    """A worker stopped on an error; ``text`` is for the user, ``kind`` the exception's name."""

    def __init__(self, job: str, kind: str, text: str) -> None:
        super().__init__()
        self.job = job
        self.kind = kind
        self.text = text


class JobEnded(Message):
    """A generation worker has returned (after success, cancellation or an error)."""

    def __init__(self, job: str, prompt_id: str | None) -> None:
        super().__init__()
        self.job = job
        self.prompt_id = prompt_id


class ConditionFailed(Message):
    """One condition could not be generated (e.g. ``engine.workbench.NoPool``); the run went on
    with the other conditions."""

    def __init__(self, prompt_id: str, condition: str, kind: str, text: str) -> None:
        super().__init__()
        self.prompt_id = prompt_id
        self.condition = condition
        self.kind = kind
        self.text = text

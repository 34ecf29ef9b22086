"""The main job: one prompt through base, aligned and hint-guided base, measured and logged.

Used by the TUI (from a thread worker) and by ``overton run``; both get progress through
the ``emit`` callback as ``engine.events`` objects. Generations run one after another: on a
few CPU cores parallel decoding gains nothing, and a shared model must not run two at once.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from engine import events as ev
from engine import prompt_metrics
from engine.conditions import CONDITIONS, DEFAULT_PANES, REFERENCE
from engine.models import Trio
from engine.prompts import summary_request
from engine.settings import GenerationSettings

Emit = Callable[[object], None]
HINT_SETTINGS = dict(temperature=0.0, max_new_tokens=160, samples=1)  # a stable, short hint


class EmptyPrompt(ValueError):
    pass


class Workbench:
    def __init__(self, trio: Trio, session, settings: GenerationSettings, emit: Emit | None = None):
        self.trio = trio
        self.session = session
        self.settings = settings
        self.emit = emit or (lambda event: None)
        self.models: dict[str, object] = {}
        self.embedder = None

    # -- models ---------------------------------------------------------------------------
    def load(self) -> None:
        """Load (converting on first use) every model of the trio; safe to call again."""
        from engine.embeddings import load_embedder
        from engine.loader import load_lm

        for role in ("base", "aligned"):
            if role not in self.models:
                spec = getattr(self.trio, role)
                self.models[role] = load_lm(spec, lambda msg, frac, r=role: self.emit(ev.ModelProgress(r, msg, frac)))
        if self.embedder is None:
            self.embedder = load_embedder(
                self.trio.embedder, lambda msg, frac: self.emit(ev.ModelProgress("embedder", msg, frac))
            )

    # -- prompts --------------------------------------------------------------------------
    def add_prompt(self, text: str) -> str:
        if not text or not text.strip():
            raise EmptyPrompt("the prompt is empty; type a question or instruction first")
        return self.session.add_prompt(text.strip())

    def run(
        self,
        prompt_id: str,
        cancel: threading.Event | None = None,
        hint: str | None = None,
        conditions: Iterable[str] = DEFAULT_PANES,
    ) -> bool:
        """Generate every condition for ``prompt_id``; False when cancelled part-way."""
        cancel = cancel or threading.Event()
        conditions = list(conditions)
        # The hint summarises aligned sample 0, so aligned must come before hinted.
        order = sorted(conditions, key=lambda c: (CONDITIONS[c].needs_hint, conditions.index(c)))
        if any(CONDITIONS[c].needs_hint for c in order) and REFERENCE not in order and hint is None:
            order.insert(0, REFERENCE)
        finished = True
        for name in order:
            if not self.run_condition(prompt_id, name, cancel, hint=hint):
                finished = False
                break
        self.update_metrics(prompt_id)
        self.emit(ev.RunFinished(prompt_id, cancelled=not finished))
        return finished

    def run_condition(
        self, prompt_id: str, name: str, cancel: threading.Event | None = None, hint: str | None = None
    ) -> bool:
        """All samples of one condition; False when cancelled."""
        cancel = cancel or threading.Event()
        cond = CONDITIONS[name]
        query = self.session.prompt(prompt_id)["text"]
        hint_row = None
        if cond.needs_hint:
            hint_row = self._hint_for(prompt_id, hint, cancel)
            if hint_row is None:
                return False
        for i in range(self.settings.samples):
            if cancel.is_set():
                return False
            if not self._sample(prompt_id, query, cond, i, cancel, hint_row):
                return False
        return True

    def _sample(self, prompt_id, query, cond, index, cancel, hint_row) -> bool:
        from engine.generation import chat_prompt, generate

        lm = self.models[cond.role]
        prompt_text = chat_prompt(lm, query) if cond.chat else cond.build(query, hint_row and hint_row["text"])
        self.emit(ev.GenerationStarted(prompt_id, cond.name, index, lm.spec.name))
        result = generate(
            lm, prompt_text, self.settings, sample_index=index, stops=cond.stops, chat=cond.chat,
            on_text=lambda text: self.emit(ev.TextDelta(prompt_id, cond.name, index, text)), cancel=cancel,
        )
        gen_id = self.session.add_generation(
            prompt_id, condition=cond.name, sample_index=index,
            hint_id=hint_row and hint_row["id"], hint=hint_row and hint_row["text"],
            source="generated", **result.record(),
        )
        from engine.metrics import word_count

        self.emit(ev.GenerationDone(prompt_id, cond.name, index, gen_id, result.text, result.finish_reason,
                                    result.completion_tokens, result.duration_s, word_count(result.text)))
        return result.finish_reason != "cancelled"

    # -- hints ----------------------------------------------------------------------------
    def _hint_for(self, prompt_id: str, hint: str | None, cancel: threading.Event) -> dict | None:
        if hint is not None and hint.strip():
            hint_id = self.session.add_hint(prompt_id, hint.strip(), source="user")
            row = {"id": hint_id, "text": hint.strip()}
            self.emit(ev.HintReady(prompt_id, row["text"], "user"))
            return row
        existing = self.session.latest_hint(prompt_id)
        if existing is not None:
            return existing
        return self.summarise(prompt_id, cancel)

    def summarise(self, prompt_id: str, cancel: threading.Event | None = None) -> dict | None:
        """Ask the aligned model for a 2-3 sentence hint of aligned sample 0."""
        from engine.generation import chat_prompt, generate

        cancel = cancel or threading.Event()
        latest = self.latest_samples(prompt_id).get(REFERENCE)
        if not latest:
            self.run_condition(prompt_id, REFERENCE, cancel)
            latest = self.latest_samples(prompt_id).get(REFERENCE)
            if not latest or cancel.is_set():
                return None
        lm = self.models["aligned"]
        query = self.session.prompt(prompt_id)["text"]
        settings = self.settings.with_(**HINT_SETTINGS)
        self.emit(ev.GenerationStarted(prompt_id, "summary", 0, lm.spec.name))
        result = generate(lm, chat_prompt(lm, summary_request(query, latest[0])), settings, chat=True,
                          on_text=lambda t: self.emit(ev.TextDelta(prompt_id, "summary", 0, t)), cancel=cancel)
        gen_id = self.session.add_generation(prompt_id, condition="summary", sample_index=0,
                                             source="generated", **result.record())
        from engine.metrics import word_count

        self.emit(ev.GenerationDone(prompt_id, "summary", 0, gen_id, result.text, result.finish_reason,
                                    result.completion_tokens, result.duration_s, word_count(result.text)))
        if result.finish_reason == "cancelled" or not result.text.strip():
            return None
        hint_id = self.session.add_hint(prompt_id, result.text.strip(), source="aligned-summary",
                                        model_id=lm.spec.id, generation_id=gen_id)
        self.emit(ev.HintReady(prompt_id, result.text.strip(), "aligned-summary"))
        return {"id": hint_id, "text": result.text.strip()}

    # -- metrics --------------------------------------------------------------------------
    def latest_samples(self, prompt_id: str) -> dict[str, list[str]]:
        """Texts of each condition's newest batch: its last sample 0 and the samples after it.

        Regenerating a pane starts a new batch; cancelled answers are kept in the session
        but left out of the metrics.
        """
        rows = sorted(self.session.generations(prompt_id), key=lambda r: (r["created_at"], r["id"]))
        batches: dict[str, list[dict]] = {}
        for row in rows:
            if row["condition"] not in CONDITIONS:
                continue
            if row["sample_index"] == 0:
                batches[row["condition"]] = []
            batches.setdefault(row["condition"], []).append(row)
        return {
            cond: [r["text"] for r in batch if r["finish_reason"] != "cancelled"]
            for cond, batch in batches.items()
            if any(r["finish_reason"] != "cancelled" for r in batch)
        }

    def update_metrics(self, prompt_id: str):
        samples = self.latest_samples(prompt_id)
        if not samples:
            return None
        result = prompt_metrics.compute(samples, self.embedder)
        self.session.add_metrics(prompt_id, result.rows())
        self.emit(ev.MetricsReady(prompt_id, result))
        return result

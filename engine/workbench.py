"""The main job: a prompt through the conditions of the method, measured and logged.

Used by the TUI (from a thread worker) and by ``overton run``; both get progress through
the ``emit`` callback as ``engine.events`` objects. The samples of a condition are asked for
in one call, which a local model decodes as one batch and a server as concurrent requests;
conditions run one after another (a shared model runs one batch at a time).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

from engine import events as ev
from engine import prompt_metrics
from engine.backend import PromptTooLong, Request
from engine.conditions import CONDITIONS, DEFAULT_PANES, REFERENCE, Condition
from engine.examples import (
    RESTYLE_SETTINGS,
    load_restyled,
    pick_nearest,
    pick_random,
    restyle,
    save_restyled,
)
from engine.metrics import word_count
from engine.models import Trio
from engine.prompts import (
    Example,
    continue_after_summary,
    fixed_examples,
    summary_request,
    urial_prefix,
    urial_prompt,
)
from engine.settings import GenerationSettings

Emit = Callable[[object], None]
HINT_SETTINGS = dict(temperature=0.0, max_new_tokens=160, samples=1)  # a stable, short hint


class EmptyPrompt(ValueError):
    pass


class PromptConflict(ValueError):
    """A prompt id that the session already holds with another text."""


class NoPool(ValueError):
    """icl-random / icl-knn need (query, aligned answer) pairs from other prompts."""


class Workbench:
    def __init__(self, trio: Trio, session, settings: GenerationSettings, emit: Emit | None = None,
                 pool: Sequence[Example] = ()):
        self.trio = trio
        self.session = session
        self.settings = settings
        self.emit = emit or (lambda event: None)
        self.models: dict[str, object] = {}
        self.embedder = None
        self.extra_pool = list(pool)  # imported (query, aligned answer) pairs
        self._restyled: tuple[Example, ...] | None = None
        self._load_lock = threading.Lock()

    # -- models ---------------------------------------------------------------------------
    def load(self) -> None:
        """Load (converting on first use) every model of the trio; safe to call again,
        from any thread."""
        with self._load_lock:
            self._load()

    def _load(self) -> None:
        from engine.embeddings import load_embedder
        from engine.lm import open_lm

        for role in ("base", "aligned"):
            if role not in self.models:
                spec = getattr(self.trio, role)
                self.models[role] = open_lm(spec, lambda msg, frac, r=role: self.emit(ev.ModelProgress(r, msg, frac)))
        if self.embedder is None:
            self.embedder = load_embedder(
                self.trio.embedder, lambda msg, frac: self.emit(ev.ModelProgress("embedder", msg, frac))
            )

    # -- prompts --------------------------------------------------------------------------
    def add_prompt(self, text: str, external_id: str | None = None) -> str:
        if not text or not text.strip():
            raise EmptyPrompt("the prompt is empty; type a question or instruction first")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: bytes from a non-UTF-8 terminal or file
            raise EmptyPrompt("the prompt holds bytes that are not UTF-8 text; retype it or convert "
                              "its file to UTF-8") from None
        for lm in self.models.values():  # loaded models: refuse before a prompt row is written
            n = lm.count_tokens(text.strip())
            if n >= lm.context_length:
                raise PromptTooLong(f"the prompt alone is {n} tokens; {lm.spec.name} holds {lm.context_length}, "
                                    "which leaves no room for an answer")
        if external_id is not None:
            found = self.session.find_prompt(external_id)
            if found is not None:
                if found["text"] != text.strip():
                    raise PromptConflict(
                        f"prompt id {external_id!r} is already in this session with different text "
                        f"({found['text'][:60]!r}); give the edited prompt a new id or use another session")
                return found["id"]
        return self.session.add_prompt(text.strip(), external_id=external_id)

    def run(
        self,
        prompt_id: str,
        cancel: threading.Event | None = None,
        hint: str | None = None,
        conditions: Iterable[str] = DEFAULT_PANES,
        resume: bool = False,
    ) -> bool:
        """Generate every condition for ``prompt_id``; False when cancelled part-way.

        With ``resume``, samples already complete in a condition's newest batch are kept and
        only the missing ones are generated (an interrupted batch run picks up where it was).
        """
        cancel = cancel or threading.Event()
        conditions = list(conditions)
        # The hint summarises aligned sample 0, so aligned must come before hinted.
        order = sorted(conditions, key=lambda c: (CONDITIONS[c].needs_hint, conditions.index(c)))
        finished = True
        for name in order:
            if not self.run_condition(prompt_id, name, cancel, hint=hint, resume=resume):
                finished = False
                break
        self.update_metrics(prompt_id)
        self.emit(ev.RunFinished(prompt_id, cancelled=not finished))
        return finished

    def run_condition(
        self, prompt_id: str, name: str, cancel: threading.Event | None = None, hint: str | None = None,
        resume: bool = False, samples: int | None = None,
    ) -> bool:
        """All samples of one condition (or the first ``samples``); False when cancelled."""
        cancel = cancel or threading.Event()
        cond = CONDITIONS[name]
        todo = [i for i in range(samples or self.settings.samples)
                if not (resume and i in self.completed_samples(prompt_id, name))]
        if not todo:
            return True
        query = self.session.prompt(prompt_id)["text"]
        hint_row = None
        if cond.needs_hint:
            hint_row = self._hint_for(prompt_id, hint, cancel)
            if hint_row is None:
                if cancel.is_set():
                    return False
                # Not a cancellation: the summariser wrote nothing usable. Say so, go on.
                self.emit(ev.Notice(f"{name} skipped: the aligned model's summary of its sample 0 was empty; "
                                    "type a hint and regenerate"))
                return True
        examples = self._examples(cond, prompt_id, query, cancel)
        if examples is None:
            return False
        if cancel.is_set():
            return False
        if cond.hint == "self":  # two steps per sample, the second prompt differs per sample
            return all(self._samples(prompt_id, query, cond, [i], cancel, hint_row, examples)
                       for i in todo if not cancel.is_set()) and not cancel.is_set()
        return self._samples(prompt_id, query, cond, todo, cancel, hint_row, examples)

    def _samples(self, prompt_id, query, cond: Condition, indexes: list[int], cancel, hint_row, examples) -> bool:
        """Generate and store the samples ``indexes`` of one condition; False when cancelled."""
        lm = self.models[cond.role]
        on_text = lambda i, text: self.emit(ev.TextDelta(prompt_id, cond.name, i, text))
        meta: dict = {}
        hint_text = hint_row["text"] if hint_row else None
        if cond.chat:
            request = Request(query, chat=True)
        else:
            with_summaries = cond.hint != "none"
            build = lambda exs: urial_prompt(query, exs, with_summaries=with_summaries, hint=hint_text)
            prompt_text, dropped = self._fit(lm, build, examples)
            meta = {"examples": len(examples) - dropped, "examples_dropped": dropped}
            prefix = urial_prefix(list(examples[dropped:]), with_summaries=with_summaries)
            request = Request(prompt_text, stops=cond.stops, prefix=prefix)
        for i in indexes:
            self.emit(ev.GenerationStarted(prompt_id, cond.name, i, lm.spec.name))
        if cond.hint == "self":
            # hinted-cot: the base model writes its own summary, then answers after it.
            (index,) = indexes
            (own,) = lm.generate(request, self.settings.with_(max_new_tokens=HINT_SETTINGS["max_new_tokens"]),
                                 indexes, on_text=on_text, cancel=cancel)
            hint_text = own.text
            meta["own_summary_tokens"] = own.completion_tokens
            results = [own]
            if own.finish_reason != "cancelled":
                on_text(index, "\n\n")
                request = Request(continue_after_summary(request.text, own.text), stops=cond.stops,
                                  prefix=request.prefix)
                results = lm.generate(request, self.settings, indexes, on_text=on_text, cancel=cancel)
        else:
            try:
                results = lm.generate(request, self.settings, indexes, on_text=on_text, cancel=cancel)
            except Exception as exc:
                # A server that fails part-way hands back the samples that did finish: keep them.
                done = getattr(exc, "results", [])
                by_seed = {self.settings.seed_for(i): i for i in indexes}
                self._store(prompt_id, cond, [by_seed.pop(r.seed, None) for r in done], done, hint_row,
                            hint_text, meta)
                raise
        self._store(prompt_id, cond, indexes, results, hint_row, hint_text, meta)
        return all(r.finish_reason != "cancelled" for r in results)

    def _store(self, prompt_id, cond: Condition, indexes, results, hint_row, hint_text, meta) -> None:
        for index, result in zip(indexes, results):
            if index is None:
                continue
            gen_id = self.session.add_generation(
                prompt_id, condition=cond.name, sample_index=index,
                hint_id=hint_row["id"] if hint_row else None, hint=hint_text,
                source="generated", meta={**meta, **result.extra}, **result.record(),
            )
            self.emit(ev.GenerationDone(prompt_id, cond.name, index, gen_id, result.text, result.finish_reason,
                                        result.completion_tokens, result.duration_s, word_count(result.text)))

    def _fit(self, lm, build, examples: Sequence[Example]) -> tuple[str, int]:
        """The prompt with as many examples as fit the context beside the answer budget.

        Examples are dropped from the front and the number dropped is recorded and reported:
        a prompt never silently loses its examples, and never overflows the context.
        """
        budget = lm.context_length - self.settings.max_new_tokens
        for dropped in range(len(examples) + 1):
            text = build(list(examples[dropped:]))
            n = lm.count_tokens(text)
            if n <= budget or dropped == len(examples):
                if dropped:
                    self.emit(ev.Notice(f"{dropped} of {len(examples)} in-context examples dropped: the prompt "
                                        f"({n} tokens) and {self.settings.max_new_tokens} new tokens must fit "
                                        f"{lm.spec.name}'s context of {lm.context_length}"))
                return text, dropped
        raise AssertionError("unreachable")

    # -- examples -------------------------------------------------------------------------
    def _examples(self, cond: Condition, prompt_id: str, query: str, cancel) -> list[Example] | None:
        if cond.examples == "none":
            return []
        if cond.examples == "fixed":
            return list(fixed_examples())
        if cond.examples == "restyled":
            restyled = self.restyled_examples(cancel)
            return list(restyled) if restyled is not None else None
        pool = self.pool(prompt_id)
        if not pool:
            raise NoPool(f"{cond.name} draws its examples from (query, aligned answer) pairs of other prompts; "
                         "run the aligned condition on other prompts first, or give a pool file (--pool)")
        if cond.examples == "random":
            return pick_random(pool, query, self.settings.seed)
        return pick_nearest(pool, query, self.embedder.embed)

    def pool(self, prompt_id: str) -> list[Example]:
        """(query, aligned sample 0) of every other prompt in the session, plus imported pairs."""
        batches = self.session.latest_batches()  # one query for every prompt
        own = []
        for row in self.session.prompts():
            batch = batches.get((row["id"], REFERENCE))
            if row["id"] != prompt_id and batch:
                own.append(Example(row["text"], next(iter(batch.values()))["text"]))
        return own + self.extra_pool

    def restyled_examples(self, cancel: threading.Event | None = None) -> tuple[Example, ...] | None:
        """The fixed queries answered and summarised by the aligned model (once, then cached)."""
        if self._restyled is not None:
            return self._restyled
        lm = self.models["aligned"]
        cached = load_restyled(lm.spec.id)
        if cached is not None:
            self._restyled = cached
            return cached
        cancel = cancel or threading.Event()
        settings = self.settings.with_(**RESTYLE_SETTINGS)
        records: list[dict] = []

        def ask(text: str, what: str, limit: int) -> str:
            if cancel.is_set():
                raise _Cancelled
            self.emit(ev.ModelProgress("aligned", f"restyling the in-context examples (once per aligned model): "
                                                  f"{what}", None))
            (r,) = lm.generate(Request(text, chat=True), settings.with_(max_new_tokens=limit), cancel=cancel)
            if r.finish_reason == "cancelled":
                raise _Cancelled
            records.append(r.record())
            return r.text

        try:
            n = iter(range(1, 4))
            examples = restyle(
                lambda q: ask(q, f"answer {next(n)}/3", RESTYLE_SETTINGS["max_new_tokens"]),
                lambda q, a: ask(summary_request(q, a), "summary", HINT_SETTINGS["max_new_tokens"]),
            )
        except _Cancelled:
            return None
        path = save_restyled(lm.spec.id, examples, records)
        self.emit(ev.ModelProgress("aligned", f"restyled examples saved to {path}", 1.0))
        self._restyled = examples
        return examples

    # -- hints ----------------------------------------------------------------------------
    def _hint_for(self, prompt_id: str, hint: str | None, cancel: threading.Event) -> dict | None:
        if hint is not None and hint.strip():
            hint_id = self.session.add_hint(prompt_id, hint.strip(), source="user")
            row = {"id": hint_id, "text": hint.strip()}
            self.emit(ev.HintReady(prompt_id, row["text"], "user"))
            return row
        existing = self.session.latest_hint(prompt_id)
        if existing is not None and not self._stale(prompt_id, existing):
            return existing
        return self.summarise(prompt_id, cancel)

    def _stale(self, prompt_id: str, hint: dict) -> bool:
        """An aligned model's summary made before the newest aligned batch summarises an answer
        that is no longer sample 0: the hint is made again. Typed and imported hints stay."""
        if hint.get("source") != "aligned-summary":
            return False
        batch = self.session.latest_batches(prompt_id).get((prompt_id, REFERENCE), {})
        first = batch.get(0) or next(iter(batch.values()), None)
        return first is not None and first["created_at"] > hint["created_at"]

    def summarise(self, prompt_id: str, cancel: threading.Event | None = None) -> dict | None:
        """Ask the aligned model for a 2-3 sentence hint of aligned sample 0."""
        cancel = cancel or threading.Event()
        latest = self.latest_samples(prompt_id).get(REFERENCE)
        if not latest:
            # The hint needs aligned sample 0 only; the other samples come when asked for.
            self.run_condition(prompt_id, REFERENCE, cancel, samples=1)
            latest = self.latest_samples(prompt_id).get(REFERENCE)
            if not latest or cancel.is_set():
                return None
        lm = self.models["aligned"]
        query = self.session.prompt(prompt_id)["text"]
        settings = self.settings.with_(**HINT_SETTINGS)
        self.emit(ev.GenerationStarted(prompt_id, "summary", 0, lm.spec.name))
        (result,) = lm.generate(Request(summary_request(query, latest[0]), chat=True), settings,
                                on_text=lambda i, t: self.emit(ev.TextDelta(prompt_id, "summary", 0, t)),
                                cancel=cancel)
        gen_id = self.session.add_generation(prompt_id, condition="summary", sample_index=0,
                                             source="generated", meta=result.extra, **result.record())
        self.emit(ev.GenerationDone(prompt_id, "summary", 0, gen_id, result.text, result.finish_reason,
                                    result.completion_tokens, result.duration_s, word_count(result.text)))
        if result.finish_reason == "cancelled" or not result.text.strip():
            return None
        hint_id = self.session.add_hint(prompt_id, result.text.strip(), source="aligned-summary",
                                        model_id=lm.spec.id, generation_id=gen_id)
        self.emit(ev.HintReady(prompt_id, result.text.strip(), "aligned-summary"))
        return {"id": hint_id, "text": result.text.strip()}

    # -- metrics --------------------------------------------------------------------------
    def completed_samples(self, prompt_id: str, condition: str) -> set[int]:
        """Sample indexes done in the condition's newest batch (the rule: Session.latest_batches)
        by the same model with the same decoding settings; a batch made otherwise counts as
        nothing done, so resuming starts a new batch instead of mixing the two."""
        batch = self.session.latest_batches(prompt_id).get((prompt_id, condition), {})
        spec = getattr(self.trio, CONDITIONS[condition].role) if condition in CONDITIONS else None
        for index, row in batch.items():
            if not self._same_recipe(row, spec, index):
                return set()
        return set(batch)

    def _same_recipe(self, row: dict, spec, index: int) -> bool:
        if row.get("finish_reason") == "imported":
            return False
        if spec is not None and row.get("model_id") != spec.id:
            return False
        import json

        stored = json.loads(row.get("settings_json") or "{}")
        wanted = self.settings.to_dict()
        keys = ("temperature", "repetition_penalty", "max_new_tokens")
        return all(stored.get(k) == wanted[k] for k in keys) and row.get("seed") == self.settings.seed_for(index)

    def latest_samples(self, prompt_id: str) -> dict[str, list[str]]:
        """Texts of each condition's newest batch in sample order; cancelled answers left out."""
        return {cond: [row["text"] for row in batch.values()]
                for (_, cond), batch in self.session.latest_batches(prompt_id).items()}

    def vectors(self, texts: Iterable[str]) -> dict | None:
        """Embeddings of ``texts``: stored ones from the session, the rest computed and stored
        (by content hash), so headless stats can use them without torch."""
        if self.embedder is None:
            return None
        texts = list(dict.fromkeys(texts))
        model_id = self.embedder.spec.id
        known = self.session.embeddings_for(model_id, texts)
        missing = [t for t in texts if t not in known]
        if missing:
            fresh = dict(zip(missing, self.embedder.embed(missing)))
            self.session.store_embeddings(model_id, fresh)
            known.update(fresh)
        return known

    def update_metrics(self, prompt_id: str):
        samples = self.latest_samples(prompt_id)
        if not samples:
            return None
        result = prompt_metrics.compute(samples, self.vectors(t for ts in samples.values() for t in ts))
        self.session.add_metrics(prompt_id, result.rows())
        self.emit(ev.MetricsReady(prompt_id, result))
        return result


class _Cancelled(Exception):
    pass

"""A transformers model in this process, behind the ``engine.backend.LanguageModel`` contract."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime, timezone

from engine.backend import (
    GenerationResult,
    OnSampleText,
    PromptTooLong,
    Request,
    finish_reason,
)
from engine.generation import PrefixCache, Sampling, decode, prefill_prefix
from engine.loader import LoadedLM
from engine.prompts import cut_at_stop
from engine.settings import GenerationSettings

PREFIX_SLOTS = 4  # prefix caches kept per model (a few MB each for the default models)
BOUNDARY_TOKENS = 2  # a prefix's last tokens may merge with the text after it; never cache them


class LocalLM:
    backend = "transformers"

    def __init__(self, loaded: LoadedLM):
        self.loaded = loaded
        self.spec = loaded.spec
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.lock: threading.Lock = loaded.lock
        self._prefixes: OrderedDict[str, PrefixCache] = OrderedDict()

    @property
    def context_length(self) -> int:
        return self.loaded.context_length

    @property
    def has_chat_template(self) -> bool:
        return self.loaded.has_chat_template

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True).input_ids)

    def render(self, request: Request) -> str:
        """What the model is given: a chat request through the model's own chat template.

        Only the user turn, no system message of ours; some templates add a default system
        turn themselves (SmolLM2 does) and the stored prompt text shows it. transformers
        renders templates in a sandboxed Jinja environment.
        """
        if not request.chat:
            return request.text
        if not self.has_chat_template:
            raise ValueError(f"{self.spec.name} has no chat template; it cannot play the aligned role")
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": request.text}], tokenize=False, add_generation_prompt=True
        )

    def _ids(self, text: str, chat: bool) -> list[int]:
        # A rendered chat prompt already carries its special tokens; raw URIAL prompts get the
        # tokenizer's own (e.g. Gemma's <bos>).
        return self.tokenizer(text, add_special_tokens=not chat).input_ids

    def prefix_cache(self, prefix: str) -> PrefixCache | None:
        """The cache of ``prefix`` (a raw prompt's start), computed on first use.

        A request with a prefix is always prefilled in these two parts, whether the cache was
        there or not, so its output never depends on what ran before: in bf16 a whole-prompt
        prefill rounds differently from a split one and may, rarely, change a greedy choice.
        """
        if prefix in self._prefixes:
            self._prefixes.move_to_end(prefix)
            return self._prefixes[prefix]
        ids = self._ids(prefix, chat=False)[:-BOUNDARY_TOKENS]
        if len(ids) < 8:
            return None
        with self.lock:
            found = prefill_prefix(self.model, ids)
        self._prefixes[prefix] = found
        while len(self._prefixes) > PREFIX_SLOTS:
            self._prefixes.popitem(last=False)
        return found

    def forget_prefixes(self) -> None:
        self._prefixes.clear()

    def eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    def generate(
        self,
        request: Request,
        settings: GenerationSettings,
        indexes: Sequence[int] = (0,),
        *,
        on_text: OnSampleText | None = None,
        cancel: threading.Event | None = None,
    ) -> list[GenerationResult]:
        indexes = list(indexes)
        prompt_text = self.render(request)
        ids = self._ids(prompt_text, request.chat)
        room = self.context_length - len(ids)
        if room < 1:
            raise PromptTooLong(
                f"the prompt is {len(ids)} tokens; {self.spec.name} holds {self.context_length}, "
                "which leaves no room for an answer"
            )
        max_new = min(settings.max_new_tokens, room)
        t0 = time.monotonic()
        prefix = self.prefix_cache(request.prefix) if request.prefix and not request.chat else None
        prep = time.monotonic() - t0  # a prefix computed now is part of this answer's latency
        started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")  # as session times
        emit = (lambda row, text: on_text(indexes[row], text)) if on_text else None
        with self.lock:
            outcomes = decode(
                self.model, self.tokenizer, ids, [settings.seed_for(i) for i in indexes],
                Sampling(settings.temperature, settings.repetition_penalty, max_new), self.eos_ids(),
                stops=request.stops, on_text=emit, cancel=cancel, prefix=prefix,
            )
        recorded = {**settings.to_dict(), "max_new_tokens_effective": max_new, "top_k": None, "top_p": None}
        results = []
        for index, o in zip(indexes, outcomes):
            text, _ = cut_at_stop(o.raw, request.stops) if request.stops else (o.raw, None)
            results.append(GenerationResult(
                model_id=self.spec.id, model_name=self.spec.name, model_family=self.spec.family,
                prompt_text=prompt_text, text=text.strip(), raw_text=o.raw,
                finish_reason=finish_reason(o.stop, o.cancelled, o.eos),
                settings=recorded, seed=settings.seed_for(index), prompt_tokens=len(ids),
                completion_tokens=len(o.ids) + int(o.eos), duration_s=round(o.duration_s + prep, 4),
                first_token_s=round(o.first_token_s + prep, 4) if o.first_token_s is not None else None,
                started_at=started_at,
                extra={"batch": len(indexes)} if len(indexes) > 1 else {},
            ))
        return results

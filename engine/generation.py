"""Streamed, cancellable generation with stop strings, recording everything that shaped it."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Callable

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from engine.loader import LoadedLM
from engine.prompts import cut_at_stop, held_back
from engine.settings import GenerationSettings

OnText = Callable[[str], None]


class PromptTooLong(ValueError):
    """The prompt leaves no room for an answer in the model's context."""


@dataclass
class GenerationResult:
    model_id: str
    model_name: str
    model_family: str
    prompt_text: str  # exactly what the model was given, chat template applied
    text: str  # the answer, stop text removed
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
    extra: dict = field(default_factory=dict)

    def record(self) -> dict:
        """Columns for the session's generations table."""
        row = asdict(self)
        row.pop("extra")
        row.pop("first_token_s")
        return row


def chat_prompt(lm: LoadedLM, user_text: str) -> str:
    """The aligned model's own chat template, user turn only, no system message of ours.

    transformers renders templates in a sandboxed Jinja environment. Some templates add a
    default system turn themselves (SmolLM2 does); the stored prompt text shows it.
    """
    if not lm.has_chat_template:
        raise ValueError(f"{lm.spec.name} has no chat template; it cannot play the aligned role")
    return lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
    )


class _Streamer(BaseStreamer):
    """Decodes new tokens, keeps the text so far, and emits only text that is final.

    Text that might be the start of a stop string is held back until it is not, so the
    panes never show a fence that the stored answer will not contain.
    """

    def __init__(self, tokenizer, stops: tuple[str, ...], on_text: OnText | None):
        self.tokenizer = tokenizer
        self.stops = stops
        self.on_text = on_text
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stop_found: str | None = None
        self.first_token_at: float | None = None
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt ids
            self._prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        kept, self.stop_found = cut_at_stop(self.text, self.stops) if self.stops else (self.text, None)
        final = len(kept) if self.stop_found else len(kept) - held_back(kept, self.stops)
        # Incomplete multi-byte characters decode to U+FFFD; wait for the rest.
        while final > self.emitted and kept[final - 1] == "\ufffd":
            final -= 1
        if final > self.emitted and self.on_text:
            self.on_text(kept[self.emitted:final])
        self.emitted = max(self.emitted, final)

    def end(self) -> None:
        kept, _ = cut_at_stop(self.text, self.stops) if self.stops else (self.text, None)
        if len(kept) > self.emitted and self.on_text:
            self.on_text(kept[self.emitted:])
        self.emitted = len(kept)


class _StopWhen(StoppingCriteria):
    def __init__(self, streamer: _Streamer, cancel: threading.Event | None):
        self.streamer = streamer
        self.cancel = cancel

    def __call__(self, input_ids, scores, **kwargs):
        done = self.streamer.stop_found is not None or (self.cancel is not None and self.cancel.is_set())
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def generation_config(lm: LoadedLM, settings: GenerationSettings, max_new_tokens: int) -> GenerationConfig:
    # Explicit, so a model's shipped defaults (top-k 50/64, top-p 0.95) never leak in:
    # the paper samples with temperature and repetition penalty only.
    common = dict(
        max_new_tokens=max_new_tokens,
        repetition_penalty=settings.repetition_penalty,
        pad_token_id=lm.tokenizer.pad_token_id,
        eos_token_id=lm.model.generation_config.eos_token_id,
        bos_token_id=lm.model.generation_config.bos_token_id,
    )
    if settings.greedy:
        return GenerationConfig(do_sample=False, top_k=None, top_p=None, temperature=None, **common)
    return GenerationConfig(do_sample=True, temperature=settings.temperature, top_k=0, top_p=1.0, **common)


def generate(
    lm: LoadedLM,
    prompt_text: str,
    settings: GenerationSettings,
    *,
    sample_index: int = 0,
    stops: tuple[str, ...] = (),
    chat: bool = False,
    on_text: OnText | None = None,
    cancel: threading.Event | None = None,
) -> GenerationResult:
    """Generate one sample for ``prompt_text`` and stream its final text to ``on_text``.

    ``chat`` prompts already carry their special tokens (the template adds them); raw URIAL
    prompts get the tokenizer's own (e.g. Gemma's <bos>).
    """
    tok = lm.tokenizer
    enc = tok(prompt_text, return_tensors="pt", add_special_tokens=not chat)
    prompt_tokens = int(enc.input_ids.shape[1])
    room = lm.context_length - prompt_tokens
    if room < 1:
        raise PromptTooLong(
            f"the prompt is {prompt_tokens} tokens; {lm.spec.name} holds {lm.context_length}, "
            "which leaves no room for an answer"
        )
    max_new = min(settings.max_new_tokens, room)
    seed = settings.seed_for(sample_index)
    streamer = _Streamer(tok, stops, on_text)
    started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")  # as session times
    with lm.lock:
        torch.manual_seed(seed)
        t0 = time.monotonic()
        with torch.inference_mode():
            out = lm.model.generate(
                **enc,
                generation_config=generation_config(lm, settings, max_new),
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_StopWhen(streamer, cancel)]),
            )
        duration = time.monotonic() - t0
    new_ids = out[0, prompt_tokens:].tolist()
    raw = tok.decode(new_ids, skip_special_tokens=True)
    text, stop = cut_at_stop(raw, stops) if stops else (raw, None)
    eos_ids = lm.model.generation_config.eos_token_id
    eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids])
    if stop is not None:
        reason = "new_query" if stop.startswith("#") else "stop"
    elif cancel is not None and cancel.is_set():
        reason = "cancelled"
    elif new_ids and new_ids[-1] in eos_ids:
        reason = "eos"
    else:
        reason = "length"
    first = streamer.first_token_at - t0 if streamer.first_token_at else None
    return GenerationResult(
        model_id=lm.spec.id,
        model_name=lm.spec.name,
        model_family=lm.spec.family,
        prompt_text=prompt_text,
        text=text.strip(),
        raw_text=raw,
        finish_reason=reason,
        settings={**settings.to_dict(), "max_new_tokens_effective": max_new, "top_k": None, "top_p": None},
        seed=seed,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(new_ids),
        duration_s=round(duration, 4),
        first_token_s=round(first, 4) if first is not None else None,
        started_at=started_at,
    )

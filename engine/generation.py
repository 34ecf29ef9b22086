"""Token-by-token decoding on a transformers model.

Our own loop instead of ``model.generate`` for three reasons the method needs:
- all samples of a condition share one prompt, so it is prefilled once and its key/value
  cache copied to every sample, which then decode together as one batch;
- each sample draws from its own random generator seeded ``seed + index``, so a sample is
  the same whether it was generated alone, in a batch, or resumed after an interruption;
- the text is streamed with stop strings held back and cancellation checked every token.

The logits follow transformers' sampling exactly (float32 scores, repetition penalty over
prompt and answer, then temperature, no top-k/top-p): under greedy decoding the output is
token for token that of ``model.generate`` (tests/test_generation.py checks it).
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from engine.prompts import cut_at_stop, held_back

OnRowText = Callable[[int, str], None]  # (row, final text)


class StreamText:
    """One sample's decoded text; hands on only text that is final.

    Text that might be the start of a stop string is held back until it is not, and an
    incomplete multi-byte character (decoded as U+FFFD) waits for the rest.
    """

    def __init__(self, tokenizer, stops: tuple[str, ...], emit: Callable[[str], None] | None):
        self.tokenizer = tokenizer
        self.stops = stops
        self.emit = emit
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stop_found: str | None = None

    def add(self, token_id: int) -> bool:
        """Take one new token; True once a stop string has appeared."""
        self.ids.append(token_id)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        kept, self.stop_found = cut_at_stop(self.text, self.stops) if self.stops else (self.text, None)
        final = len(kept) if self.stop_found else len(kept) - held_back(kept, self.stops)
        while final > self.emitted and kept[final - 1] == "\ufffd":
            final -= 1
        self._emit_to(kept, final)
        return self.stop_found is not None

    def finish(self) -> None:
        kept, _ = cut_at_stop(self.text, self.stops) if self.stops else (self.text, None)
        self._emit_to(kept, len(kept))

    def _emit_to(self, kept: str, final: int) -> None:
        if final > self.emitted and self.emit:
            self.emit(kept[self.emitted:final])
        self.emitted = max(self.emitted, final)


@dataclass
class RowOutcome:
    ids: list[int]
    raw: str  # everything decoded
    stop: str | None  # the stop string that ended it, if any
    eos: bool
    cancelled: bool
    first_token_s: float | None
    duration_s: float


@dataclass(frozen=True)
class Sampling:
    temperature: float  # 0: greedy
    repetition_penalty: float
    max_new_tokens: int


class PrefixCache:
    """The key/value cache of a fixed token prefix, computed once and copied for each use."""

    def __init__(self, ids: list[int], cache: DynamicCache):
        self.ids = ids
        self.cache = cache

    def matches(self, ids: Sequence[int]) -> bool:
        return len(ids) > len(self.ids) and list(ids[: len(self.ids)]) == self.ids


@functools.lru_cache(maxsize=None)
def _cache_arg(model_class: type) -> str:
    # transformers 5.x renamed ``past_key_values`` to ``cache``; older releases know only the first.
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _forward(model, ids: torch.Tensor, cache: DynamicCache, **kw):
    return model(input_ids=ids, use_cache=True, **{_cache_arg(type(model)): cache}, **kw)


def prefill_prefix(model, ids: list[int]) -> PrefixCache:
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        _forward(model, torch.tensor([ids]), cache, logits_to_keep=1)
    return PrefixCache(list(ids), cache)


def _penalise(scores: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    # transformers' RepetitionPenaltyLogitsProcessor: every token seen so far, prompt included.
    seen = torch.gather(scores, 1, history)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(1, history, seen)


def decode(
    model,
    tokenizer,
    prompt_ids: list[int],
    seeds: Sequence[int],
    sampling: Sampling,
    eos_ids: set[int],
    *,
    stops: tuple[str, ...] = (),
    on_text: OnRowText | None = None,
    cancel: threading.Event | None = None,
    prefix: PrefixCache | None = None,
) -> list[RowOutcome]:
    """One sample per seed from one prompt: prefill once, decode the samples as a batch."""
    rows = len(seeds)
    t0 = time.monotonic()
    streams = [StreamText(tokenizer, stops, (lambda t, r=r: on_text(r, t)) if on_text else None)
               for r in range(rows)]
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    outcomes: list[RowOutcome | None] = [None] * rows
    first_token: float | None = None

    def close(row: int, *, eos=False, cancelled=False) -> None:
        s = streams[row]
        s.finish()
        outcomes[row] = RowOutcome(list(s.ids), s.text, s.stop_found, eos, cancelled, first_token,
                                   round(time.monotonic() - t0, 4))

    with torch.inference_mode():
        if prefix is not None and prefix.matches(prompt_ids):
            cache = copy.deepcopy(prefix.cache)
            todo = prompt_ids[len(prefix.ids):]
        else:
            cache = DynamicCache(config=model.config)
            todo = prompt_ids
        out = _forward(model, torch.tensor([todo]), cache, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        if rows > 1:
            cache.batch_repeat_interleave(rows)
            logits = logits.expand(rows, -1)
        history = torch.tensor([prompt_ids] * rows)
        active = list(range(rows))  # original row of each batch position
        for step in range(sampling.max_new_tokens):
            if cancel is not None and cancel.is_set():
                for r in active:
                    close(r, cancelled=True)
                break
            scores = logits
            if sampling.repetition_penalty != 1.0:
                scores = _penalise(scores, history, sampling.repetition_penalty)
            if sampling.temperature == 0:
                chosen = scores.argmax(dim=-1)
            else:
                probs = torch.softmax(scores / sampling.temperature, dim=-1)
                chosen = torch.cat([torch.multinomial(probs[i], 1, generator=generators[r])
                                    for i, r in enumerate(active)])
            if first_token is None:
                first_token = round(time.monotonic() - t0, 4)
            keep: list[int] = []
            for i, r in enumerate(active):
                token = int(chosen[i])
                if token in eos_ids:
                    close(r, eos=True)
                elif streams[r].add(token):
                    close(r)
                elif step == sampling.max_new_tokens - 1:
                    close(r)
                else:
                    keep.append(i)
            if not keep:
                break
            chosen = chosen[keep]
            history = torch.cat([history[keep], chosen[:, None]], dim=1)
            if len(keep) < len(active):  # finished samples leave the batch
                cache.batch_select_indices(torch.tensor(keep))
                active = [active[i] for i in keep]
            out = _forward(model, chosen[:, None], cache)
            logits = out.logits[:, -1, :].float()
    return [o for o in outcomes]  # type: ignore[misc]

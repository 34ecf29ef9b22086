import threading

import pytest

from engine.generation import _Streamer, chat_prompt, generate
from engine.loader import load_lm
from engine.prompts import STOP_STRINGS, urial_prompt
from engine.settings import GenerationSettings


@pytest.fixture(scope="module")
def base(tiny_trio):
    return load_lm(tiny_trio.base)


@pytest.fixture(scope="module")
def aligned(tiny_trio):
    return load_lm(tiny_trio.aligned)


def test_streamer_holds_back_and_cuts_at_fence(base):
    tok = base.tokenizer
    ids = tok("Rest and fluids.\n``` trailing", add_special_tokens=False).input_ids
    shown: list[str] = []
    s = _Streamer(tok, STOP_STRINGS, shown.append)
    import torch

    s.put(torch.tensor([[1, 2]]))  # the prompt, ignored
    for i in ids:
        s.put(torch.tensor([i]))
        # Nothing that could be part of a fence is ever shown.
        assert "`" not in "".join(shown)
    s.end()
    assert "".join(shown) == "Rest and fluids.\n"
    assert s.stop_found == "```"


def test_generation_records_settings_seed_and_tokens(base):
    settings = GenerationSettings(max_new_tokens=12, seed=7)
    chunks: list[str] = []
    r = generate(base, urial_prompt("Why?"), settings, sample_index=2, stops=STOP_STRINGS, on_text=chunks.append)
    assert r.seed == 9
    assert r.settings["temperature"] == 0.5 and r.settings["repetition_penalty"] == 1.1
    assert r.settings["top_k"] is None and r.settings["top_p"] is None
    assert r.prompt_tokens > 20 and 1 <= r.completion_tokens <= 12
    assert r.finish_reason in {"stop", "new_query", "eos", "length"}
    assert "".join(chunks).strip() == r.text
    assert r.prompt_text.endswith("# Answer:\n```\n")


def test_same_seed_same_text(base):
    settings = GenerationSettings(max_new_tokens=16, seed=3)
    a = generate(base, urial_prompt("Same?"), settings)
    b = generate(base, urial_prompt("Same?"), settings)
    c = generate(base, urial_prompt("Same?"), settings, sample_index=1)
    assert a.raw_text == b.raw_text
    assert a.raw_text != c.raw_text


def test_chat_prompt_uses_template(aligned):
    text = chat_prompt(aligned, "Hello [bold]")
    assert text == "<|user|>Hello [bold]<|end|><|assistant|>"


def test_cancel_stops_generation_early(base):
    cancel = threading.Event()
    seen: list[str] = []

    def on_text(t):
        seen.append(t)
        if len(seen) == 3:
            cancel.set()

    settings = GenerationSettings(max_new_tokens=500, temperature=1.0)
    r = generate(base, "Tell me", settings, on_text=on_text, cancel=cancel)
    assert r.finish_reason == "cancelled"
    assert r.completion_tokens < 50

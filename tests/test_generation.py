import threading

import pytest
import torch

from engine.backend import PromptTooLong, Request
from engine.generation import StreamText
from engine.lm import open_lm
from engine.prompts import STOP_STRINGS, fixed_examples, urial_prefix, urial_prompt
from engine.settings import GenerationSettings


@pytest.fixture(scope="module")
def base(tiny_trio):
    return open_lm(tiny_trio.base)


@pytest.fixture(scope="module")
def aligned(tiny_trio):
    return open_lm(tiny_trio.aligned)


def test_stream_text_holds_back_and_cuts_at_fence(base):
    tok = base.tokenizer
    ids = tok("Rest and fluids.\n``` trailing", add_special_tokens=False).input_ids
    shown: list[str] = []
    s = StreamText(tok, STOP_STRINGS, shown.append)
    for i in ids:
        stopped = s.add(i)
        # Nothing that could be part of a fence is ever shown.
        assert "`" not in "".join(shown)
        if stopped:
            break
    s.finish()
    assert "".join(shown) == "Rest and fluids.\n"
    assert s.stop_found == "```"


def test_generation_records_settings_seed_and_tokens(base):
    settings = GenerationSettings(max_new_tokens=12, seed=7)
    chunks: list[tuple[int, str]] = []
    (r,) = base.generate(Request(urial_prompt("Why?"), stops=STOP_STRINGS), settings, [2],
                         on_text=lambda i, t: chunks.append((i, t)))
    assert r.seed == 9
    assert r.settings["temperature"] == 0.5 and r.settings["repetition_penalty"] == 1.1
    assert r.settings["top_k"] is None and r.settings["top_p"] is None
    assert r.prompt_tokens > 20 and 1 <= r.completion_tokens <= 12
    assert r.finish_reason in {"stop", "new_query", "eos", "length"}
    assert {i for i, _ in chunks} == {2}
    assert "".join(t for _, t in chunks).strip() == r.text
    assert r.prompt_text.endswith("# Answer:\n```\n")


def test_same_seed_same_text(base):
    settings = GenerationSettings(max_new_tokens=16, seed=3)
    (a,) = base.generate(Request(urial_prompt("Same?")), settings)
    (b,) = base.generate(Request(urial_prompt("Same?")), settings)
    (c,) = base.generate(Request(urial_prompt("Same?")), settings, [1])
    assert a.raw_text == b.raw_text
    assert a.raw_text != c.raw_text


def test_a_sample_is_the_same_alone_or_in_a_batch(base):
    """Each sample has its own random generator (seed + index): batching, or resuming only
    the missing samples, never changes a sample."""
    settings = GenerationSettings(max_new_tokens=20, seed=11, temperature=1.0)
    request = Request(urial_prompt("Batch?"))
    together = base.generate(request, settings, [0, 1, 2, 3])
    alone = [base.generate(request, settings, [i])[0] for i in (0, 1, 2, 3)]
    assert [r.raw_text for r in together] == [r.raw_text for r in alone]
    assert len({r.raw_text for r in together}) > 1  # different seeds, different samples
    assert [r.seed for r in together] == [11, 12, 13, 14]
    assert together[0].extra == {"batch": 4} and alone[0].extra == {}


def test_greedy_output_is_that_of_model_generate(base):
    """Our decoding loop picks exactly the tokens transformers' generate picks (greedy, with
    the repetition penalty over prompt and answer)."""
    settings = GenerationSettings(max_new_tokens=24, temperature=0.0, repetition_penalty=1.3)
    prompt = urial_prompt("Greedy?")
    (ours,) = base.generate(Request(prompt), settings)
    enc = base.tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = base.model.generate(**enc, do_sample=False, max_new_tokens=24, repetition_penalty=1.3,
                                  top_k=None, top_p=None, pad_token_id=base.tokenizer.pad_token_id)
    theirs = base.tokenizer.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert ours.raw_text == theirs


def test_prefix_cache_gives_identical_greedy_output(base):
    examples = fixed_examples()
    settings = GenerationSettings(max_new_tokens=24, temperature=0.0)
    for query in ("Why is the sky blue?", "```code``` [bold] ünïcode"):
        text = urial_prompt(query, examples)
        (plain,) = base.generate(Request(text, stops=STOP_STRINGS), settings)
        (cached,) = base.generate(Request(text, stops=STOP_STRINGS, prefix=urial_prefix(examples)), settings)
        assert cached.raw_text == plain.raw_text and cached.finish_reason == plain.finish_reason
    cache = base.prefix_cache(urial_prefix(examples))
    assert cache is base.prefix_cache(urial_prefix(examples))  # computed once, then reused
    assert len(cache.ids) > 100


def test_request_prefix_must_start_the_text():
    with pytest.raises(ValueError, match="prefix"):
        Request("abc", prefix="xyz")


def test_chat_request_uses_template(aligned):
    assert aligned.render(Request("Hello [bold]", chat=True)) == "<|user|>Hello [bold]<|end|><|assistant|>"
    (r,) = aligned.generate(Request("Hello", chat=True), GenerationSettings(max_new_tokens=4))
    assert r.prompt_text == "<|user|>Hello<|end|><|assistant|>"


def test_prompt_too_long_is_refused_with_numbers(base):
    text = "word " * (base.context_length + 10)
    with pytest.raises(PromptTooLong, match=r"tokens; tiny-base holds \d+"):
        base.generate(Request(text), GenerationSettings(max_new_tokens=4))


def test_cancel_stops_every_sample_early_and_keeps_partials(base):
    cancel = threading.Event()
    seen: list[tuple[int, str]] = []

    def on_text(i, t):
        seen.append((i, t))
        if len(seen) == 6:
            cancel.set()

    settings = GenerationSettings(max_new_tokens=500, temperature=1.0)
    results = base.generate(Request("Tell me"), settings, [0, 1], on_text=on_text, cancel=cancel)
    assert [r.finish_reason for r in results] == ["cancelled", "cancelled"]
    assert all(r.completion_tokens < 50 for r in results)
    for i, r in enumerate(results):
        assert "".join(t for j, t in seen if j == i).strip() == r.text

"""Target 1 — streaming overhead: overton's streamed generation (own decoding loop, text
decoded every token, stop strings held back, cancel checked, callback per piece) against a
bare ``model.generate`` on the same model, prompt, settings and seed. Greedy decoding, so
both produce the same tokens and do the same work (checked). Ratio = ours ÷ bare, ≤ 1.05."""

from __future__ import annotations

import sys

import torch
from common import exit_code, interleave, median, report, spread
from gen_common import default_model, icl_request

from engine.settings import GenerationSettings

MAX_NEW = 48


def main() -> int:
    lm = default_model("base")
    request = icl_request("Write a long story about a lighthouse keeper.", cached=False, stops=False)
    # A stop string is searched and held back as in real use; one the story will not contain,
    # so that both sides generate the same tokens.
    streamed = request.__class__(request.text, stops=("\n# Query:",))
    settings = GenerationSettings(temperature=0.0, max_new_tokens=MAX_NEW)
    enc = lm.tokenizer(request.text, return_tensors="pt")
    pieces: list[str] = []
    out_ids: list = []

    def ours():
        pieces.clear()
        (r,) = lm.generate(streamed, settings, on_text=lambda i, t: pieces.append(t))
        out_ids.append(("ours", r.raw_text, r.completion_tokens))

    def bare():
        torch.manual_seed(settings.seed)
        with torch.inference_mode():
            out = lm.model.generate(**enc, do_sample=False, max_new_tokens=MAX_NEW,
                                    repetition_penalty=settings.repetition_penalty, top_k=None, top_p=None,
                                    pad_token_id=lm.tokenizer.pad_token_id)
        new = out[0, enc.input_ids.shape[1]:]
        out_ids.append(("bare", lm.tokenizer.decode(new, skip_special_tokens=True), int(new.shape[0])))

    print(f"timing 1 warm-up + 5 rounds of both ({MAX_NEW} tokens each)…", flush=True)
    times = interleave({"ours": ours, "bare": bare}, repeat=5, warmup=1)
    last = {name: (text, n) for name, text, n in out_ids[-2:]}
    same = last["ours"][0].startswith(last["bare"][0][: len(last["ours"][0])]) and last["ours"][1] == last["bare"][1]
    ratio = median(times["ours"]) / median(times["bare"])
    print(f"model {lm.spec.name}, prompt {enc.input_ids.shape[1]} tokens, {MAX_NEW} new tokens, greedy")
    print(f"ours (streamed): median {median(times['ours']):.3f} s ({spread(times['ours'])}), "
          f"{len(pieces)} pieces streamed")
    print(f"bare generate:   median {median(times['bare']):.3f} s ({spread(times['bare'])})")
    print(f"same tokens: {same} ({last['ours'][1]} vs {last['bare'][1]})")
    result = report("streaming-overhead", ratio if same else None, "<= 1.05",
                    ours_s=median(times["ours"]), bare_s=median(times["bare"]), tokens=MAX_NEW,
                    same_output=same)
    return exit_code(result)


if __name__ == "__main__":
    sys.exit(main())

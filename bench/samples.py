"""Target 2 — samples: N = 5 samples of one condition generated together (one prefill, its
key/value cache copied to the five rows, decoded as one batch) against five separate calls.
Real settings (temperature 0.5, repetition penalty 1.1, stop strings), the icl prompt.
Each sample has its own random generator, so both ways give the same samples (reported).
Ratio = separate ÷ together, ≥ 2."""

from __future__ import annotations

import sys

from common import exit_code, interleave, median, report, spread
from gen_common import default_model, icl_request

from engine.settings import GenerationSettings

N = 5
MAX_NEW = 48


def main() -> int:
    lm = default_model("base")
    request = icl_request("What medicine should I take when I get a cold?", cached=False)
    settings = GenerationSettings(max_new_tokens=MAX_NEW, seed=1)
    got: dict[str, list] = {}

    def together():
        got["together"] = lm.generate(request, settings, list(range(N)))

    def separate():
        got["separate"] = [lm.generate(request, settings, [i])[0] for i in range(N)]

    print(f"timing 1 warm-up + 3 rounds of both (each round ~{N} generations of ≤ {MAX_NEW} tokens)…", flush=True)
    times = interleave({"together": together, "separate": separate}, repeat=3, warmup=1)
    same = sum(a.raw_text == b.raw_text for a, b in zip(got["together"], got["separate"]))
    tokens = sum(r.completion_tokens for r in got["together"])
    ratio = median(times["separate"]) / median(times["together"])
    print(f"model {lm.spec.name}, prompt {got['together'][0].prompt_tokens} tokens, N = {N}, "
          f"≤ {MAX_NEW} new tokens each ({tokens} in all)")
    print(f"together: median {median(times['together']):.2f} s ({spread(times['together'])})")
    print(f"separate: median {median(times['separate']):.2f} s ({spread(times['separate'])})")
    print(f"samples identical either way: {same}/{N}")
    return exit_code(report("samples-batched", ratio, ">= 2", n=N, together_s=median(times["together"]),
                            separate_s=median(times["separate"]), identical_samples=same, tokens=tokens))


if __name__ == "__main__":
    sys.exit(main())

"""Target 3 — shared prefix: the in-context conditions repeat the URIAL header and the
examples before every query. Their key/value cache is computed once per model and copied for
each prompt, so only the query is prefilled. Time to first token with the cache against
recomputing it (the cache forgotten before each cold call), for three queries; greedy output
must be identical (also a test: tests/test_real_models.py). For reference, a prompt sent
without a prefix at all (one whole prefill) is timed too. Ratio = recompute ÷ cached, ≥ 3."""

from __future__ import annotations

import sys

from common import exit_code, median, report
from gen_common import QUERIES, default_model, icl_request

from engine.settings import GenerationSettings

MAX_NEW = 16
REPEAT = 3


def main() -> int:
    lm = default_model("base")
    settings = GenerationSettings(temperature=0.0, max_new_tokens=MAX_NEW)
    lm.prefix_cache(icl_request(QUERIES[0], cached=True).prefix)  # computed once per model
    ttft = {"cached": [], "recompute": [], "whole": []}
    identical = True
    prompt_tokens = 0
    for _ in range(REPEAT):
        for query in QUERIES:
            lm.forget_prefixes()
            (cold,) = lm.generate(icl_request(query, cached=True), settings)
            (warm,) = lm.generate(icl_request(query, cached=True), settings)
            (whole,) = lm.generate(icl_request(query, cached=False), settings)
            ttft["recompute"].append(cold.first_token_s)
            ttft["whole"].append(whole.first_token_s)
            ttft["cached"].append(warm.first_token_s)
            identical &= cold.raw_text == warm.raw_text
            prompt_tokens = cold.prompt_tokens
            print(f"  round {_ + 1}/{REPEAT} {query[:40]!r}: first token after {cold.first_token_s:.3f} s "
                  f"recomputed, {warm.first_token_s:.3f} s cached", flush=True)
    cached_ids = len(lm.prefix_cache(icl_request(QUERIES[0], cached=True).prefix).ids)
    ratio = median(ttft["recompute"]) / median(ttft["cached"])
    print(f"model {lm.spec.name}: prompt ~{prompt_tokens} tokens, of which {cached_ids} cached")
    print(f"time to first token: recompute median {median(ttft['recompute']):.3f} s, "
          f"cached median {median(ttft['cached']):.3f} s")
    print(f"one whole prefill (no prefix): median {median(ttft['whole']):.3f} s")
    print(f"greedy outputs identical: {identical}")
    return exit_code(report("prefix-cache-ttft", ratio if identical else None, ">= 3",
                            recompute_s=median(ttft["recompute"]), cached_s=median(ttft["cached"]),
                            whole_prefill_s=median(ttft["whole"]),
                            prefix_tokens=cached_ids, identical=identical))


if __name__ == "__main__":
    sys.exit(main())

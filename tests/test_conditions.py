import json

import numpy as np
import pytest

from engine import events as ev
from engine.conditions import CONDITIONS, parse_conditions
from engine.examples import load_pool, pick_nearest, pick_random
from engine.prompt_file import PromptFileError, read_prompts
from engine.prompts import Example, fixed_examples, urial_prompt
from engine.session import Session
from engine.settings import GenerationSettings
from engine.workbench import NoPool, Workbench

POOL = [Example(f"question {i}", f"answer {i}") for i in range(10)]


def test_parse_conditions():
    assert parse_conditions(None) == ("base", "aligned", "hinted")
    assert parse_conditions("icl, base,icl") == ("icl", "base")
    assert parse_conditions("all") == tuple(CONDITIONS)
    with pytest.raises(ValueError, match="unknown condition nope"):
        parse_conditions("base,nope")


def test_random_examples_are_reproducible_and_never_the_query():
    a = pick_random(POOL, "question 3", seed=1)
    assert a == pick_random(POOL, "question 3", seed=1)
    assert a != pick_random(POOL, "question 3", seed=2)
    assert len(a) == 3 and all(e.query != "question 3" for e in a)
    assert pick_random(POOL[:2], "question 0", seed=0) == [POOL[1]]


def test_nearest_examples_by_cosine_nearest_last():
    vecs = {"q": [1, 0], "question 0": [0, 1], "question 1": [0.9, 0.1], "question 2": [0.6, 0.4],
            "question 3": [0.99, 0.01], "question 4": [0.1, 0.9]}

    def embed(texts):
        v = np.array([vecs[t] for t in texts], dtype=float)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    chosen = pick_nearest(POOL[:5], "q", embed)
    assert [e.query for e in chosen] == ["question 2", "question 1", "question 3"]


def test_pool_file_forms_and_errors(tmp_path):
    f = tmp_path / "pool.jsonl"
    f.write_text('\ufeff{"prompt": "a", "answer": "b"}\r\n\r\n{"prompt": "c", "samples": ["d", "e"]}\r\n', encoding="utf-8")
    assert load_pool(f) == [Example("a", "b"), Example("c", "d")]
    f.write_text('{"prompt": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="pool.jsonl:1"):
        load_pool(f)


def test_prompt_files(tmp_path):
    t = tmp_path / "p.txt"
    t.write_text("First?\n\n  Second?  \n", encoding="utf-8")
    lines = read_prompts(t)
    assert [(p.text, p.line) for p in lines] == [("First?", 1), ("Second?", 3)]
    assert lines[0].id == read_prompts(t)[0].id  # stable ids: re-runs resume
    j = tmp_path / "p.jsonl"
    j.write_text(json.dumps({"id": 7, "prompt": "A?"}) + "\n"
                 + json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "B?"}]}) + "\n",
                 encoding="utf-8")
    assert [(p.id, p.text) for p in read_prompts(j)][0] == ("7", "A?")
    assert read_prompts(j)[1].text == "B?"
    j.write_text('{"id": 1, "prompt": "A"}\n{"id": 1, "prompt": "B"}\n', encoding="utf-8")
    with pytest.raises(PromptFileError, match="p.jsonl:2: id '1' already used on line 1"):
        read_prompts(j)
    j.write_text('{"prompt": "A"}\n{not json\n', encoding="utf-8")
    with pytest.raises(PromptFileError, match="p.jsonl:2: not valid JSON"):
        read_prompts(j)
    (tmp_path / "e.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(PromptFileError, match="holds no prompts"):
        read_prompts(tmp_path / "e.txt")


@pytest.fixture
def bench(tiny_trio, tmp_path):
    seen: list = []
    session = Session.open(tmp_path / "c.db")
    wb = Workbench(tiny_trio, session, GenerationSettings(max_new_tokens=6), emit=seen.append)
    wb.load()
    yield wb, session, seen
    session.close()


def test_every_condition_builds_its_own_prompt(bench):
    wb, session, seen = bench
    other = wb.add_prompt("What is a good name for a cat?")
    wb.run(other, conditions=["aligned"])
    pid = wb.add_prompt("How do plants grow?")
    assert wb.run(pid, conditions=list(CONDITIONS)) is True
    rows = {r["condition"]: r for r in session.generations(pid)}
    p = {c: rows[c]["prompt_text"] for c in CONDITIONS}
    restyled = wb.restyled_examples()
    q = "How do plants grow?"
    assert p["base"] == urial_prompt(q)
    assert p["icl"] == urial_prompt(q, fixed_examples())
    assert p["icl-restyled"] == urial_prompt(q, restyled)
    assert [e.query for e in restyled] == [e.query for e in fixed_examples()]
    assert all(e.summary for e in restyled)
    assert p["hinted"] == urial_prompt(q, restyled, with_summaries=True, hint=session.latest_hint(pid)["text"])
    hint = session.latest_hint(pid)
    assert p["hinted"].endswith(f"# Summary:\n```\n{hint['text']}\n```\n\n# Answer:\n```\n")
    # The pool conditions use the other prompt's aligned answer, never this prompt.
    other_answer = wb.latest_samples(other)["aligned"][0]
    for c in ("icl-random", "icl-knn"):
        assert "What is a good name for a cat?" in p[c] and other_answer.strip() in p[c]
        assert p[c].count("How do plants grow?") == 1
        assert rows[c]["meta"]["examples"] == 1
    # hinted-cot: the base model's own summary sits in the summary block it answered after.
    own = rows["hinted-cot"]["hint"]
    assert own is not None and rows["hinted-cot"]["hint_id"] is None
    assert p["hinted-cot"].endswith(f"# Summary:\n```\n{own.strip()}\n```\n\n# Answer:\n```\n")
    # Restyled examples are generated once and reused from the cache.
    assert wb.restyled_examples() is restyled


def test_pool_conditions_need_a_pool(bench):
    wb, session, _ = bench
    pid = wb.add_prompt("Lonely prompt")
    with pytest.raises(NoPool, match="--pool"):
        wb.run(pid, conditions=["icl-random"])


def test_examples_dropped_to_fit_context_and_reported(bench):
    wb, session, seen = bench
    lm = wb.models["base"]
    wb.settings = wb.settings.with_(max_new_tokens=lm.context_length - 1500)  # room for ~1 example
    pid = wb.add_prompt("Short?")
    wb.run_condition(pid, "icl")
    (row,) = session.generations(pid)
    assert row["meta"]["examples_dropped"] >= 1
    assert row["meta"]["examples"] + row["meta"]["examples_dropped"] == 3
    notices = [e for e in seen if isinstance(e, ev.Notice)]
    assert notices and "in-context examples dropped" in notices[0].message
    assert row["prompt_tokens"] + wb.settings.max_new_tokens <= lm.context_length


def test_resume_generates_only_missing_samples(bench):
    wb, session, _ = bench
    wb.settings = wb.settings.with_(samples=2)
    pid = wb.add_prompt("Resume me")
    wb.run_condition(pid, "base")
    wb.settings = wb.settings.with_(samples=4)
    wb.run_condition(pid, "base", resume=True)
    assert [r["sample_index"] for r in session.generations(pid)] == [0, 1, 2, 3]
    wb.run_condition(pid, "base", resume=True)
    assert len(session.generations(pid)) == 4


def test_prompt_file_suffix_decides_dedupes_and_reports_every_bad_line(tmp_path):
    t = tmp_path / "curly.txt"
    t.write_text("{not json} is a fine prompt\nSame?\nSame?\n", encoding="utf-8")
    assert [p.text for p in read_prompts(t)] == ["{not json} is a fine prompt", "Same?"]
    j = tmp_path / "bad.jsonl"
    j.write_text('{"prompt": "ok"}\n{oops\n{"prompt": 3}\n', encoding="utf-8")
    with pytest.raises(PromptFileError) as info:
        read_prompts(j)
    assert str(info.value).splitlines() == [
        f"{j}:2: not valid JSON (Expecting property name enclosed in double quotes)",
        f"{j}:3: needs a non-empty \"prompt\" string or a user turn in \"messages\"",
    ]

import threading

import pytest

from engine import events as ev
from engine.session import Session
from engine.settings import GenerationSettings
from engine.workbench import EmptyPrompt, Workbench


@pytest.fixture
def bench(tiny_trio, tmp_path):
    seen: list = []
    session = Session.open(tmp_path / "s.db")
    wb = Workbench(tiny_trio, session, GenerationSettings(max_new_tokens=10, samples=2), emit=seen.append)
    wb.load()
    yield wb, session, seen
    session.close()


def test_run_logs_every_condition_hint_and_metrics(bench):
    wb, session, seen = bench
    pid = wb.add_prompt("  What medicine should I take when I get a cold?  ")
    assert wb.run(pid) is True
    assert session.prompt(pid)["text"] == "What medicine should I take when I get a cold?"
    rows = session.generations(pid)
    by_cond = {}
    for r in rows:
        by_cond.setdefault(r["condition"], []).append(r)
    assert sorted(by_cond) == ["aligned", "base", "hinted", "summary"]
    assert [r["sample_index"] for r in by_cond["base"]] == [0, 1]
    assert [r["seed"] for r in by_cond["base"]] == [0, 1]
    hint = session.latest_hint(pid)
    assert hint["source"] == "aligned-summary"
    assert hint["generation_id"] == by_cond["summary"][0]["id"]
    # The hinted prompt carries the hint and the stored generation records which hint.
    for r in by_cond["hinted"]:
        assert r["hint_id"] == hint["id"] and r["hint"] == hint["text"]
        assert f"# Summary:\n```\n{hint['text']}\n```\n\n# Answer:\n```\n" in r["prompt_text"]
    assert by_cond["aligned"][0]["prompt_text"].startswith("<|user|>What medicine")
    assert all(r["settings"]["max_new_tokens"] == 10 for r in rows if r["condition"] != "summary")
    names = {(m["name"], m["condition"]) for m in session.metrics(pid)}
    assert ("similarity", "base") in names and ("jaccard_s0", "hinted") in names
    metrics = [e for e in seen if isinstance(e, ev.MetricsReady)][-1].metrics
    assert set(metrics.conditions) == {"aligned", "base", "hinted"}
    assert metrics.figures["aligned"].samples == 2
    assert metrics.jaccard_s0[("aligned", "aligned")] in (1.0, None)
    assert isinstance(metrics.cosine_s0[("base", "aligned")], float)
    # Streaming: text arrives in several pieces per generation.
    deltas = [e for e in seen if isinstance(e, ev.TextDelta) and e.condition == "base" and e.sample_index == 0]
    done = [e for e in seen if isinstance(e, ev.GenerationDone) and e.condition == "base" and e.sample_index == 0][0]
    assert "".join(d.text for d in deltas).strip() == done.text
    assert isinstance(seen[-1], ev.RunFinished) and seen[-1].cancelled is False


def test_user_hint_is_used_and_recorded(bench):
    wb, session, seen = bench
    pid = wb.add_prompt("Name three renewable energy sources.")
    wb.run(pid, hint="Solar, wind and hydropower, each in one sentence.")
    hint = session.latest_hint(pid)
    assert hint["source"] == "user" and hint["text"] == "Solar, wind and hydropower, each in one sentence."
    assert not session.generations(pid, condition="summary")  # no summary needed


def test_regenerating_hinted_starts_a_new_batch(bench):
    wb, session, seen = bench
    pid = wb.add_prompt("Why is the sky blue?")
    wb.run(pid)
    wb.run_condition(pid, "hinted", hint="Rayleigh scattering of sunlight by air molecules.")
    wb.update_metrics(pid)
    rows = session.generations(pid, condition="hinted")
    assert len(rows) == 4
    latest = wb.latest_samples(pid)["hinted"]
    assert len(latest) == 2
    assert [r["text"] for r in rows if r["hint"].startswith("Rayleigh")] == latest


def test_cancel_keeps_partial_answer(bench):
    wb, session, seen = bench
    wb.settings = wb.settings.with_(max_new_tokens=400, samples=1)
    cancel = threading.Event()

    def emit(e):
        seen.append(e)
        if isinstance(e, ev.TextDelta) and e.condition == "base":
            cancel.set()

    wb.emit = emit
    pid = wb.add_prompt("Tell me a long story.")
    assert wb.run(pid, cancel) is False
    rows = session.generations(pid)
    assert [(r["condition"], r["finish_reason"]) for r in rows] == [("base", "cancelled")]
    assert rows[0]["completion_tokens"] < 400
    assert seen[-1] == ev.RunFinished(pid, cancelled=True)


def test_empty_prompt_is_refused(bench):
    wb, session, _ = bench
    with pytest.raises(EmptyPrompt):
        wb.add_prompt(" \n\t ")
    assert session.counts()["prompts"] == 0


def test_empty_summary_is_a_notice_not_a_cancellation(bench, monkeypatch):
    wb, session, seen = bench
    monkeypatch.setattr(wb, "summarise", lambda prompt_id, cancel=None: None)
    pid = wb.add_prompt("Summarise me")
    assert wb.run(pid) is True
    assert {r["condition"] for r in session.generations(pid)} == {"base", "aligned"}
    notices = [e.message for e in seen if isinstance(e, ev.Notice)]
    assert any("hinted skipped" in m and "type a hint" in m for m in notices)
    assert seen[-1] == ev.RunFinished(pid, cancelled=False)


def test_prompt_longer_than_the_context_is_refused_before_it_is_stored(bench):
    from engine.backend import PromptTooLong

    wb, session, _ = bench
    with pytest.raises(PromptTooLong, match="leaves no room for an answer"):
        wb.add_prompt("word " * 6000)
    assert session.counts()["prompts"] == 0


def test_a_new_aligned_batch_makes_a_new_hint_but_typed_hints_stay(bench):
    """The hint summarises aligned sample 0: a run that makes a new aligned batch (the same
    prompt generated again) summarises the new sample 0; the hinted answers use that one."""
    wb, session, _ = bench
    wb.settings = wb.settings.with_(seed=1)
    pid = wb.add_prompt("How do tides work?")
    wb.run(pid)
    first = session.latest_hint(pid)
    assert wb.run(pid, conditions=["hinted"]) and session.latest_hint(pid)["id"] == first["id"]  # still fresh
    wb.settings = wb.settings.with_(seed=7)
    wb.run(pid)  # a new aligned batch, then hinted
    second = session.latest_hint(pid)
    assert second["id"] != first["id"] and second["source"] == "aligned-summary"
    hinted = sorted(session.generations(pid, "hinted"), key=lambda g: (g["created_at"], g["id"]))
    assert {g["hint_id"] for g in hinted[-2:]} == {second["id"]}  # the newest batch (2 samples)
    assert len([g for g in session.generations(pid) if g["condition"] == "summary"]) == 2
    # A typed hint is the researcher's: a later aligned batch does not replace it.
    wb.run(pid, hint="Tides follow the moon.", conditions=["hinted"])
    wb.settings = wb.settings.with_(seed=9)
    wb.run(pid, conditions=["aligned", "hinted"])
    assert session.latest_hint(pid)["text"] == "Tides follow the moon."

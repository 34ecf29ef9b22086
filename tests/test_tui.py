"""The Textual app driven through Pilot, with real tiny models and a real session file."""

from __future__ import annotations

import threading
import time

import pytest
from textual.geometry import Region
from textual.widgets import Input, TextArea

from engine import events as ev
from engine.sanitize import printable
from engine.session import Session
from engine.settings import GenerationSettings
from engine.workbench import Workbench
from tui import messages as msg
from tui.app import HINT_LABEL, OvertonApp

SIZE = (200, 50)


class RecordingApp(OvertonApp):
    """Records every text delta it handles, as the app received it.

    Textual calls the handler of every class in the MRO, so OvertonApp.on_text_delta still runs
    after this one (no super() call, or each piece would be drawn twice)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deltas: list[ev.TextDelta] = []

    def on_text_delta(self, message: msg.TextDelta) -> None:
        self.deltas.append(message.event)


@pytest.fixture(autouse=True)
def short_side_generations(monkeypatch):
    """Hints (160 tokens) and restyled examples (300) are capped for real models; a tiny random
    model would use every token, so keep them short here."""
    from engine import examples, workbench

    monkeypatch.setitem(workbench.HINT_SETTINGS, "max_new_tokens", 16)
    monkeypatch.setitem(examples.RESTYLE_SETTINGS, "max_new_tokens", 16)


def paced_workbench(trio, session, settings, delay: float) -> Workbench:
    """A workbench whose generation waits ``delay`` s after each piece of text (the emit callback
    runs inside generation), so that a tiny model streams at a human pace on any machine."""

    def emit(event):
        if isinstance(event, ev.TextDelta):
            time.sleep(delay)

    return Workbench(trio, session, settings, emit=emit)


@pytest.fixture
def session(tmp_path):
    s = Session.open(tmp_path / "tui.db")
    yield s
    s.close()


async def wait_for(pilot, condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; status: {pilot.app.status_text!r}")
        await pilot.pause(0.05)


async def submit(pilot, text: str) -> None:
    prompt = pilot.app.query_one("#prompt", Input)
    prompt.focus()
    prompt.value = text
    await pilot.press("enter")


async def run_prompt(pilot, text: str) -> str:
    app = pilot.app
    ended = app.jobs_ended
    await submit(pilot, text)
    await wait_for(pilot, lambda: app.jobs_ended > ended and not app.busy, what="the run to end")
    await pilot.pause(0.1)  # let the flush timer draw the last pieces
    return app.prompt_id


def by_condition(rows):
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["condition"], []).append(r)
    return out


def screen_text(widget) -> str:
    """What the widget draws, as text."""
    w, h = widget.size
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, w, h)))


async def test_prompt_fills_panes_metrics_and_session(tiny_trio, session):
    app = OvertonApp(tiny_trio, session, GenerationSettings(max_new_tokens=12, seed=3))
    async with app.run_test(size=SIZE) as pilot:
        assert "tui.db" in app.title
        assert "different model families" in app.sub_title  # tiny-a vs tiny-b
        assert str(app.query_one("#hint-label").render()) == HINT_LABEL
        pid = await run_prompt(pilot, "What medicine should I take when I get a cold?")
        assert pid is not None and app.last_error is None, app.status_text

        gens = by_condition(session.generations(pid))
        assert sorted(gens) == ["aligned", "base", "hinted", "summary"]
        assert [p["text"] for p in session.prompts()] == ["What medicine should I take when I get a cold?"]
        hint = session.latest_hint(pid)
        assert hint["source"] == "aligned-summary" and hint["text"]
        assert gens["hinted"][0]["hint_id"] == hint["id"]
        assert session.counts()["prompts"] == 1

        stored = {(m["name"], m["condition"], m["other_condition"]): m["value"] for m in session.metrics(pid)}
        for cond in ("base", "aligned", "hinted"):
            row = gens[cond][0]
            pane = app.pane(cond)
            # The pane shows exactly the stored answer, and its title the stored figures.
            assert pane.visible_text == row["text"]
            assert pane.samples[0].finish_reason == row["finish_reason"]
            title = pane.title_widget.render().plain
            assert row["model_name"] in title and row["finish_reason"] in title and "sample 1/1" in title
            assert f"{row['completion_tokens'] / row['duration_s']:.1f} tok/s" in title
        assert any(app.pane(c).visible_text.strip() for c in ("base", "aligned", "hinted"))
        assert app.query_one("#hint", TextArea).text == printable(hint["text"])
        assert "source: aligned-summary" in str(app.query_one("#hint-label").render())
        assert "done" in app.status_text

        # Metrics panel: the same numbers as the session's metrics rows.
        table = app.query_one("#metrics").rows()
        assert set(table) == {"base", "aligned", "hinted"}
        for cond in ("base", "hinted"):
            words, jac, cov, cos = table[cond][2], table[cond][3], table[cond][4], table[cond][5]
            assert float(words) == pytest.approx(stored[("words", cond, None)], abs=0.5)
            if stored[("similarity", cond, None)] is not None:
                assert float(jac) == pytest.approx(stored[("similarity", cond, None)], abs=5e-4)
                assert float(cov) == pytest.approx(stored[("coverage", cond, None)], abs=5e-4)
            assert float(cos) == pytest.approx(stored[("embedding", cond, None)], abs=5e-4)
        matrix = app.query_one("#metrics").matrix()
        assert set(matrix) == {"base", "aligned", "hinted"}
        j, c = matrix["base"][2].split("/")  # columns: s0, base, aligned, hinted
        assert float(c) == pytest.approx(stored[("cosine_s0", "base", "aligned")], abs=5e-3)
        if stored[("jaccard_s0", "base", "aligned")] is not None:
            assert float(j) == pytest.approx(stored[("jaccard_s0", "base", "aligned")], abs=5e-3)


async def test_text_streams_in_pieces_and_redraws_are_batched(tiny_trio, session):
    settings = GenerationSettings(max_new_tokens=40, temperature=0.8)
    app = RecordingApp(tiny_trio, session, settings, workbench=paced_workbench(tiny_trio, session, settings, 0.02))
    app.flush_interval = 0.25  # slow redraws, so batching shows even when tokens come slowly
    async with app.run_test(size=SIZE) as pilot:
        pid = await run_prompt(pilot, "Name three renewable energy sources.")
        rows = by_condition(session.generations(pid))
        for cond in ("base", "aligned", "hinted"):
            deltas = [d for d in app.deltas if d.condition == cond and d.prompt_id == pid]
            row = rows[cond][0]
            # The pane received the answer in pieces, and the pieces add up to the stored answer.
            assert "".join(d.text for d in deltas).strip() == row["text"]
            if row["completion_tokens"] >= 10:
                assert len(deltas) > 3, (cond, len(deltas), row["completion_tokens"])
        base = [d for d in app.deltas if d.condition == "base"]
        assert len(base) > 3
        # Redraws of streamed text come from the timer, several pieces at a time.
        streamed = sum(1 for d in app.deltas if d.condition in ("base", "aligned", "hinted"))
        flushes = sum(app.pane(c).flushes for c in ("base", "aligned", "hinted"))
        assert 0 < flushes < streamed / 2, (flushes, streamed)
        assert app.pane("base").flushes < len(base)

    # A burst of pieces from the engine thread is drawn in a few redraws, not one per piece.
    app = RecordingApp(tiny_trio, session, GenerationSettings(max_new_tokens=5))
    async with app.run_test(size=SIZE) as pilot:
        app.prompt_id = pid = session.add_prompt("burst")

        def engine_thread():
            app.workbench.emit(ev.GenerationStarted(pid, "aligned", 0, "tiny-chat"))
            for i in range(300):
                app.workbench.emit(ev.TextDelta(pid, "aligned", 0, f"w{i} "))

        t = threading.Thread(target=engine_thread)
        t.start()
        t.join()
        pane = app.pane("aligned")
        await wait_for(pilot, lambda: "w299" in pane.visible_text, what="the burst to be drawn")
        assert len(app.deltas) == 300
        assert pane.flushes < 30, pane.flushes
        assert pane.visible_text.split() == [f"w{i}" for i in range(300)]
        assert "300 words" in pane.title_widget.render().plain


async def test_escape_cancels_and_app_stays_usable(tiny_trio, session):
    settings = GenerationSettings(max_new_tokens=400)
    app = OvertonApp(tiny_trio, session, settings, workbench=paced_workbench(tiny_trio, session, settings, 0.02))
    async with app.run_test(size=SIZE) as pilot:
        # Paced at 20 ms a piece, generation is still under way when escape arrives.
        await submit(pilot, "Tell me a long story about the sea.")

        def streaming():
            return any(
                p.current is not None and p.samples[p.current].finish_reason is None and p.samples[p.current].deltas > 2
                for p in app.panes
            )

        await wait_for(pilot, streaming, what="a pane to start streaming")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.busy, what="cancel to take effect")
        pid = app.prompt_id
        rows = sorted(session.generations(pid), key=lambda r: r["created_at"])
        # The generation that was streaming is stored, cut short, as 'cancelled'; nothing ran after it.
        assert [r["finish_reason"] == "cancelled" for r in rows] == [False] * (len(rows) - 1) + [True]
        row = rows[-1]
        assert row["condition"] in ("base", "aligned") and 0 < row["completion_tokens"] < 400
        assert "cancelled" in app.pane(row["condition"]).title_widget.render().plain
        assert "cancelled" in app.status_text
        assert not app.pane("hinted").samples  # nothing ran after the cancel

        # Still responsive: a second prompt runs to the end.
        app.settings = app.workbench.settings = GenerationSettings(max_new_tokens=8)
        pid2 = await run_prompt(pilot, "Short one.")
        assert pid2 != pid
        reasons = {r["condition"]: r["finish_reason"] for r in session.generations(pid2)}
        assert set(reasons) >= {"base", "aligned"} and "cancelled" not in reasons.values()
        assert session.counts()["prompts"] == 2


async def test_edited_hint_regenerates_hinted_pane(tiny_trio, session):
    app = OvertonApp(tiny_trio, session, GenerationSettings(max_new_tokens=10))
    async with app.run_test(size=SIZE) as pilot:
        pid = await run_prompt(pilot, "How does a detective question a suspect?")
        before = by_condition(session.generations(pid))
        assert len(before["hinted"]) == 1
        edited = "The answer lists the suspect's rights [sic], recording, and calm open questions."
        area = app.query_one("#hint", TextArea)
        await pilot.press("ctrl+t")
        assert app.focused is area
        area.load_text(edited)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: not app.busy and len(by_condition(session.generations(pid))["hinted"]) == 2,
                       what="the hinted regeneration")
        await pilot.pause(0.1)
        after = by_condition(session.generations(pid))
        assert len(after["base"]) == 1 and len(after["aligned"]) == 1 and len(after["summary"]) == 1
        new = max(after["hinted"], key=lambda r: r["created_at"])
        assert new["hint"] == edited
        assert f"# Summary:\n```\n{edited}\n```" in new["prompt_text"]
        hint = session.latest_hint(pid)
        assert hint["source"] == "user" and hint["text"] == edited and new["hint_id"] == hint["id"]
        assert app.pane("hinted").visible_text == printable(new["text"])
        assert "source: user" in str(app.query_one("#hint-label").render())
        assert app.pane("hinted").samples[0].finish_reason == new["finish_reason"]


async def test_empty_prompt_is_refused(tiny_trio, session):
    app = OvertonApp(tiny_trio, session, GenerationSettings(max_new_tokens=5))
    async with app.run_test(size=SIZE) as pilot:
        await submit(pilot, "   ")
        await pilot.pause(0.1)
        assert not app.busy
        assert "empty" in app.status_text
        assert session.counts()["prompts"] == 0
        assert session.counts()["generations"] == 0


async def test_model_text_is_shown_literally(tiny_trio, session):
    app = OvertonApp(tiny_trio, session, GenerationSettings(max_new_tokens=5))
    nasty = "[bold]x[/] and \x1b[31mred\x1b[0m [link=http://e.x]y[/link] [/"
    async with app.run_test(size=SIZE) as pilot:
        pid = session.add_prompt("[bold]prompt[/]")
        app.prompt_id = pid
        pane = app.pane("base")

        def engine_thread():  # events arrive from a worker thread, as from the workbench
            emit = app.workbench.emit
            emit(ev.GenerationStarted(pid, "base", 0, "[red]model[/red]"))
            for piece in (nasty[:7], nasty[7:20], nasty[20:]):
                emit(ev.TextDelta(pid, "base", 0, piece))

        t = threading.Thread(target=engine_thread)
        t.start()
        t.join()
        await wait_for(pilot, lambda: "[/" in pane.visible_text, what="the text to be drawn")
        await pilot.pause(0.1)
        drawn = screen_text(pane.text_widget)
        assert "[bold]x[/]" in drawn and "\x1b" not in drawn
        assert "␛[31mred␛[0m" in drawn and "[link=http://e.x]y[/link]" in drawn
        assert "[red]model[/red]" in pane.title_widget.render().plain
        # No style leaked from the text: nothing in the pane body is bold.
        for strip in pane.text_widget.render_lines(Region(0, 0, *pane.text_widget.size)):
            assert not any(seg.style and seg.style.bold for seg in strip)

        app.workbench.emit(ev.GenerationDone(pid, "base", 0, "g1", nasty.strip(), "length", 5, 0.5, 9))
        await pilot.pause(0.1)
        assert "[bold]x[/]" in screen_text(pane.text_widget)
        assert "length" in pane.title_widget.render().plain
        # A prompt with markup also goes through the real pipeline without trouble.
        await run_prompt(pilot, "[bold]Why[/] is \x1b[2J the sky blue? [/")
        assert app.last_error is None, app.status_text
        assert session.prompts()[-1]["text"] == "[bold]Why[/] is \x1b[2J the sky blue? [/"


async def test_model_errors_are_shown_and_the_app_stays_usable(tiny_trio, session, tmp_path):
    from dataclasses import replace

    from engine.models import ModelSpec

    missing = ModelSpec("gone", "hf", str(tmp_path / "no-such-model"), family="tiny-a")
    app = OvertonApp(replace(tiny_trio, base=missing), session, GenerationSettings(max_new_tokens=5))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.last_error is not None, what="the loading error")
        assert "no-such-model" in app.status_text and "ModelUnavailable" not in app.status_text
        # A prompt is stored, the load is retried, and the same error is reported; no crash.
        app.last_error = None
        await run_prompt(pilot, "Still there?")
        assert "no model folder at" in app.status_text
        assert session.counts()["prompts"] == 1 and session.counts()["generations"] == 0
        assert not app.busy
        await submit(pilot, "")
        await pilot.pause(0.1)
        assert "empty" in app.status_text


# -- switchable panes, N samples, stepping, metrics of every condition -------------------------

def latest_texts(session, pid) -> dict[str, list[str]]:
    """Each condition's newest batch, straight from the session rows (cancelled left out)."""
    return {cond: [r["text"] for r in batch.values()]
            for (_, cond), batch in session.latest_batches(pid).items()}


def title(pane) -> str:
    return pane.title_widget.render().plain


async def test_pane_switches_to_icl_and_ctrl_g_generates_it(tiny_trio, session):
    app = OvertonApp(tiny_trio, session, GenerationSettings(max_new_tokens=8))
    async with app.run_test(size=SIZE) as pilot:
        pid = await run_prompt(pilot, "How are you?")
        assert [p.condition for p in app.panes] == ["base", "aligned", "hinted"]
        await pilot.press("ctrl+o")  # focus the active pane, pane 1 (base)
        pane = app.panes[0]
        assert app.focused is pane and app.active_pane is pane
        await pilot.press("ctrl+n", "ctrl+n")  # base -> aligned -> icl
        assert pane.condition == "icl" and app.panes[1].condition == "aligned"
        assert "ICL (URIAL, 3 fixed examples)" in title(pane) and "tiny-base" in title(pane)
        assert "1: icl" in str(pane.border_title)
        assert "not generated yet" in title(pane) and "ctrl+g" in app.status_text
        assert pane.visible_text == ""
        assert "icl" not in by_condition(session.generations(pid))

        ended = app.jobs_ended
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: app.jobs_ended > ended and not app.busy, what="the icl generation")
        await pilot.pause(0.1)
        rows = by_condition(session.generations(pid))
        assert len(rows["icl"]) == 1 and len(rows["base"]) == 1  # only the pane's condition ran
        icl = rows["icl"][0]
        assert "# Query:" in icl["prompt_text"]  # the fixed in-context examples
        assert pane.visible_text == printable(icl["text"])
        assert "sample 1/1" in title(pane) and icl["finish_reason"] in title(pane)
        assert app.last_error is None, app.status_text
        # The metrics panel has every condition of the prompt, not only the panes' ones.
        assert set(app.query_one("#metrics").rows()) == {"base", "aligned", "hinted", "icl"}
        assert set(app.query_one("#metrics").matrix()) == {"base", "aligned", "hinted", "icl"}
        # Back to base: its stored answer is shown again; ctrl+p cycles backwards through all.
        await pilot.press("ctrl+p", "ctrl+p")
        assert pane.condition == "base" and pane.visible_text == printable(rows["base"][0]["text"])
        await pilot.press("ctrl+p")
        assert pane.condition == "hinted-cot"  # wraps around the list of conditions
        assert "hinted-cot" in app.query_one("#settings").render().plain


async def test_n_samples_set_in_the_app_stepping_and_metrics(tiny_trio, session):
    from engine import metrics as m

    settings = GenerationSettings(max_new_tokens=10, temperature=1.0)
    held, gate = threading.Event(), threading.Event()

    def hold_first_sample(event):  # runs in the worker: holds the run until the test lets it go
        if isinstance(event, ev.GenerationStarted) and not gate.is_set():
            held.set()
            gate.wait(30)

    app = OvertonApp(tiny_trio, session, settings, workbench=Workbench(tiny_trio, session, settings,
                                                                       emit=hold_first_sample))
    async with app.run_test(size=SIZE) as pilot:
        assert "samples: 1" in app.query_one("#settings").render().plain
        await pilot.press("ctrl+up")
        assert app.workbench.settings.samples == 2
        assert "samples: 2" in app.query_one("#settings").render().plain
        ended = app.jobs_ended
        await submit(pilot, "Name three renewable energy sources.")
        # N changed while a generation runs applies to the next run, never to this one.
        await wait_for(pilot, held.is_set, what="the first sample to start")
        assert app.busy
        await pilot.press("ctrl+up")
        assert app.workbench.settings.samples == 2 and app.samples_next == 3
        assert "→ 3 from the next run" in app.query_one("#settings").render().plain
        gate.set()
        await wait_for(pilot, lambda: app.jobs_ended > ended and not app.busy, what="the run")
        await pilot.pause(0.1)
        pid = app.prompt_id
        rows = by_condition(session.generations(pid))
        assert {c: len(rows[c]) for c in ("base", "aligned", "hinted")} == {"base": 2, "aligned": 2, "hinted": 2}
        assert app.workbench.settings.samples == 3 and "samples: 3" in app.query_one("#settings").render().plain

        # Stepping: the pane shows one sample at a time, "sample i/N" in its title.
        aligned = app.pane("aligned")
        texts = {r["sample_index"]: r["text"] for r in rows["aligned"]}
        # The samples of a batch stream together; the pane followed the first of them.
        assert aligned.visible_text == printable(texts[0])
        assert "sample 1/2" in title(aligned)
        await pilot.press("ctrl+o", "ctrl+o")  # the active pane (1), then the next one
        assert app.focused is aligned and app.active_pane is aligned
        await pilot.press("right")
        assert aligned.visible_text == printable(texts[1]) and "sample 2/2" in title(aligned)
        await pilot.press("left", "left")  # back to the first, then stays there
        assert aligned.visible_text == printable(texts[0]) and "sample 1/2" in title(aligned)
        assert aligned.current == 0
        await pilot.press("ctrl+l", "alt+right")  # from the prompt box: alt+→ steps the active pane
        assert app.focused is app.query_one("#prompt") and aligned.current == 1
        assert aligned.visible_text == printable(texts[1]) and "sample 2/2" in title(aligned)
        row1 = next(r for r in rows["aligned"] if r["sample_index"] == 1)
        assert row1["finish_reason"] in title(aligned) and f"{m.word_count(row1['text'])} word" in title(aligned)

        # Metrics: diversity and information aggregation as engine.metrics gives them from the rows.
        stored = latest_texts(session, pid)
        panel = app.query_one("#metrics")
        table, agg = panel.rows(), panel.aggregation()
        ref = stored["aligned"][0]
        for cond in ("base", "aligned", "hinted"):
            assert table[cond][1] == "2"
            want = m.mean_pairwise_jaccard(stored[cond])
            assert table[cond][6] == ("—" if want is None else f"{want:.3f}")
        assert table["aligned"][0] == "aligned (ceiling)"
        assert table["aligned"][3] == f"{m.jaccard(stored['aligned'][1], ref):.3f}"
        assert set(agg) == {"base", "hinted"}  # every condition but the reference
        for cond in ("base", "hinted"):
            bags = [m.word_bag(t) for t in stored[cond]]
            ref_bag = m.word_bag(ref)
            shares = [[], [], []]
            for i, bag in enumerate(bags):
                if not bag:
                    continue
                others = [o for j, o in enumerate(bags) if j != i]
                shares[0].append(len(bag & ref_bag) / len(bag))
                shares[1].append(sum(len(bag & o) / len(bag) for o in others) / len(others))
                shares[2].append(len(bag & frozenset().union(*others)) / len(bag))
            want = [f"{sum(s) / len(s):.3f}" if s else "—" for s in shares]
            assert agg[cond][1:] == want, cond
        # ... and they are stored in the session's metrics too.
        names = {(r["name"], r["condition"]) for r in session.metrics(pid)}
        assert ("info_in_union_others", "base") in names

        # N = 3 now: ctrl+g on a pane generates three samples of its condition.
        app.panes[0].focus()  # as a click would
        await pilot.press("ctrl+n", "ctrl+n")  # pane 1: base -> aligned -> icl
        ended = app.jobs_ended
        await pilot.press("ctrl+g")
        await pilot.pause(0.05)
        await wait_for(pilot, lambda: app.jobs_ended > ended and not app.busy, what="icl x3")
        await pilot.pause(0.1)
        icl = sorted(session.generations(pid, "icl"), key=lambda r: r["sample_index"])
        assert [r["sample_index"] for r in icl] == [0, 1, 2]
        pane = app.panes[0]
        assert "sample 1/3" in title(pane) and pane.visible_text == printable(icl[0]["text"])
        await pilot.press("alt+right", "alt+right")
        assert "sample 3/3" in title(pane) and pane.visible_text == printable(icl[2]["text"])
        assert panel.rows()["icl"][1] == "3" and "icl" in panel.aggregation()


async def test_pool_conditions_without_a_pool_report_it_and_the_app_goes_on(tiny_trio, session):
    app = OvertonApp(tiny_trio, session, GenerationSettings(max_new_tokens=6))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+o", "ctrl+o", "ctrl+o")  # to pane 3
        assert app.active_pane is app.panes[2]
        await pilot.press("ctrl+p", "ctrl+p")  # hinted -> icl-knn -> icl-random
        assert app.panes[2].condition == "icl-random"
        pid = await run_prompt(pilot, "First prompt: the session has no pool yet.")
        # The other panes' conditions ran; icl-random says why it could not.
        rows = by_condition(session.generations(pid))
        assert sorted(rows) == ["aligned", "base"]
        assert "NoPool" in app.status_text and "aligned answer" in app.status_text
        assert "NoPool" in title(app.panes[2]) and app.panes[2].visible_text == ""
        assert not app.busy

        # Still usable: a second prompt has a pool (the first one's aligned answer).
        pid2 = await run_prompt(pilot, "Second prompt.")
        assert "icl-random" in by_condition(session.generations(pid2))
        assert app.last_error is None, app.status_text
        row = session.generations(pid2, "icl-random")[0]
        assert "First prompt" in row["prompt_text"]  # the example drawn from the pool
        assert app.panes[2].visible_text == printable(row["text"])

        # Opening the first prompt again shows its stored samples in the panes.
        app.open_prompt(pid)
        await pilot.pause(0.05)
        first = by_condition(session.generations(pid))
        assert app.pane("base").visible_text == printable(first["base"][0]["text"])
        assert "not generated yet" in title(app.panes[2])
        assert set(app.query_one("#metrics").rows()) == {"base", "aligned"}
        # ... and any stored answer can be brought up by its row (as a history browser would).
        gid = first["aligned"][0]["id"]
        assert app.show_answer("aligned", 0, gid)
        assert app.pane("aligned").samples[0].generation_id == gid
        assert not app.show_answer("aligned", 5)


async def test_a_continued_session_opens_on_its_latest_prompt(tiny_trio, session):
    first = session.add_prompt("An earlier question")
    latest = session.add_prompt("The latest question")
    for pid, text in ((first, "old answer"), (latest, "Stored answer about tea")):
        session.add_generation(pid, condition="base", text=text, finish_reason="stop")
    app = OvertonApp(tiny_trio, session, GenerationSettings(max_new_tokens=5))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert app.prompt_id == latest
        assert "Stored answer about tea" in app.pane("base").visible_text
        assert "old answer" not in app.pane("base").visible_text
        # The prompt box shows the latest prompt selected: typing replaces it, never appends.
        box = app.query_one("#prompt")
        assert box.value == "The latest question" and box.selected_text == "The latest question"
        box.focus()
        await pilot.press("N", "e", "w")
        assert box.value == "New"


async def test_the_same_prompt_again_is_a_new_batch_of_one_prompt(tiny_trio, session):
    app = OvertonApp(tiny_trio, session, GenerationSettings(max_new_tokens=5))
    async with app.run_test(size=SIZE) as pilot:
        first = await run_prompt(pilot, "Why is the sea salty?")
        again = await run_prompt(pilot, "  Why is the sea salty?")
        assert again == first and len(session.prompts()) == 1  # statistics count it once
        rows = by_condition(session.generations(first))
        assert len(rows["aligned"]) == 2 and len(rows["summary"]) == 2  # the hint follows the new sample 0
        other = await run_prompt(pilot, "Why is the sky blue?")
        assert other != first and len(session.prompts()) == 2

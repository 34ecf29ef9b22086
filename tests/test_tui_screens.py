"""Annotation, sessions and history, search, statistics and export in the app, driven through
Pilot: real tiny models, real session files (most answers written with the engine's own API so
that the tests know their text)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from textual.widgets import Input, TextArea

from engine.annotations import Annotations, history
from engine.session import Session
from engine.settings import GenerationSettings
from engine.stats import compute_stats
from tui.annotate import LabelPicker, NoteEditor, PreferencePicker, badge
from tui.app import OvertonApp
from tui.screens.export import ExportDialog
from tui.screens.sessions import SessionsScreen
from tui.screens.stats import StatsScreen, table_row

SIZE = (200, 50)
SETTINGS = GenerationSettings(max_new_tokens=8, seed=3)
ANSWERS = {
    "What should I drink when I have a cold?": {
        "base": ["Drink hot water with honey.", "Tea with lemon works."],
        "aligned": ["Warm fluids such as herbal tea, broth and water help.", "Herbal tea and soup."],
        "hinted": ["Warm fluids: herbal tea, broth, water.", "Soup and tea."],
    },
    "Which renewable energy sources exist?": {
        "base": ["Solar panels on roofs.", "Windmills."],
        "aligned": ["Solar, wind, hydropower, geothermal and biomass.", "Solar and wind power."],
        "hinted": ["Solar, wind and hydropower are renewable.", "Geothermal energy."],
    },
}


@pytest.fixture(autouse=True)
def short_side_generations(monkeypatch):
    from engine import examples, workbench

    monkeypatch.setitem(workbench.HINT_SETTINGS, "max_new_tokens", 8)
    monkeypatch.setitem(examples.RESTYLE_SETTINGS, "max_new_tokens", 8)


def build_session(path: Path) -> tuple[Session, list[str]]:
    """A session with two prompts, each with two stored samples of base, aligned and hinted."""
    s = Session.open(path)
    ids = []
    for prompt, conds in ANSWERS.items():
        pid = s.add_prompt(prompt)
        ids.append(pid)
        for cond, texts in conds.items():
            for i, text in enumerate(texts):
                s.add_generation(pid, condition=cond, sample_index=i, text=text, finish_reason="stop",
                                 model_name=f"tiny-{cond}")
    return s, ids


def gen_id(session: Session, pid: str, cond: str, index: int = 0) -> str:
    return session.latest_batches(pid)[(pid, cond)][index]["id"]


def make_app(tiny_trio, session, tmp_path, annotator="alice") -> OvertonApp:
    return OvertonApp(tiny_trio, session, SETTINGS, annotator=annotator, sessions_dir=tmp_path)


async def wait_for(pilot, condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; status: {pilot.app.status_text!r}")
        await pilot.pause(0.05)


async def type_text(pilot, text: str) -> None:
    await pilot.press(*["space" if ch == " " else ch for ch in text])


def title(app, slot: int) -> str:
    return app.panes[slot].title_widget.render().plain


async def annotate(pilot, slot: int, rating: int, labels: list[int], note: str | None, preference_moves: int):
    """Through the keys: focus pane ``slot``, rate, toggle labels by number, write a note,
    choose the preference ``preference_moves`` rows down the list."""
    app = pilot.app
    await pilot.press(f"alt+{slot + 1}")
    await pilot.pause()
    await pilot.press(str(rating))
    await pilot.pause()
    assert app.status_text.startswith("saved:"), app.status_text
    await pilot.press("l")
    await pilot.pause()
    assert isinstance(app.screen, LabelPicker)
    for n in labels:
        await pilot.press(str(n))
        await pilot.pause()
    await pilot.press("escape")
    await pilot.pause()
    if note is not None:
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, NoteEditor)
        await type_text(pilot, note)
        assert "draft" in app.screen.status_text
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not isinstance(app.screen, NoteEditor)
        assert "saved:" in app.status_text and "note added" in app.status_text
    await pilot.press("p")
    await pilot.pause()
    assert isinstance(app.screen, PreferencePicker)
    for _ in range(preference_moves):
        await pilot.press("down")
    await pilot.press("enter")
    await pilot.pause()
    assert "preference" in app.status_text, app.status_text


async def open_prompt_from_sessions(pilot, row: int) -> None:
    """ctrl+s, then the prompt in ``row`` of the current session, enter."""
    app = pilot.app
    await pilot.press("ctrl+s")
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, SessionsScreen)
    await wait_for(pilot, lambda: screen.loads >= 2 and screen.prompts, what="the prompt list")
    table = screen.query_one("#prompts")
    table.focus()
    table.move_cursor(row=row)
    await pilot.pause()
    await pilot.press("enter")
    await pilot.pause()
    assert not isinstance(app.screen, SessionsScreen), screen.status_text


def test_badge_text():
    assert badge({"rating": 4, "labels": ["helpful", "refusal"], "note": "x"}).plain == "★4 · helpful, refusal · ✎"
    assert badge(None, "aligned", "aligned").plain == "♥ best"
    assert badge({"rating": None, "labels": [], "note": None}, "base", "aligned").plain == ""
    assert badge({"rating": 2, "labels": [], "note": None}, "tie", "base").plain == "★2 · = tie"


async def test_annotate_two_prompts_reopen_undo_and_export(tiny_trio, tmp_path):
    path = tmp_path / "study.db"
    session, (p1, p2) = build_session(path)
    app = make_app(tiny_trio, session, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        # prompt 2, opened from the sessions screen: its stored answers are in the panes
        await open_prompt_from_sessions(pilot, 1)
        assert app.prompt_id == p2
        assert app.pane("aligned").visible_text == ANSWERS["Which renewable energy sources exist?"]["aligned"][0]
        await annotate(pilot, 0, 4, [1, 3], "too short", preference_moves=1)  # base; preference aligned
        g_base2 = gen_id(session, p2, "base")
        a = Annotations(session, "alice")
        assert a.current(g_base2) == {"rating": 4, "labels": ["helpful", "refusal"], "note": "too short"}
        assert a.preference(p2) == "aligned"
        assert "★4 · helpful, refusal · ✎" in title(app, 0)
        assert "♥ best" in title(app, 1) and "♥ best" not in title(app, 0)

        # prompt 1: the aligned pane's second sample
        await open_prompt_from_sessions(pilot, 0)
        assert app.prompt_id == p1
        await pilot.press("alt+2", "alt+right")
        await pilot.pause()
        assert app.pane("aligned").current == 1
        await annotate(pilot, 1, 2, [4], "repeats itself", preference_moves=3)  # tie
        g_al1 = gen_id(session, p1, "aligned", 1)
        assert a.current(g_al1) == {"rating": 2, "labels": ["repetitive"], "note": "repeats itself"}
        assert a.preference(p1) == "tie"
        assert "★2 · repetitive · ✎ · = tie" in title(app, 1)
        # sample 1 of aligned has the badge, sample 0 not
        await pilot.press("alt+left")
        await pilot.pause()
        assert "★2" not in title(app, 1) and "= tie" in title(app, 1)

        # undo the newest change (the tie): the database no longer has it
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert app.status_text.startswith("undone:") and "tie" in app.status_text
        assert a.preference(p1) is None
        rows = history(session, prompt_id=p1)
        assert any(r["kind"] == "preference" and r["value"] == "tie" and r["deleted_at"] for r in rows)
        assert all(r["annotator"] == "alice" and r["manual"] == 1 for r in rows)
        await pilot.press("ctrl+q")
    session.close()

    # a new app on the same file: the badges are there
    session = Session.open(path)
    app = make_app(tiny_trio, session, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await open_prompt_from_sessions(pilot, 1)
        assert "★4 · helpful, refusal · ✎" in title(app, 0)
        assert "♥ best" in title(app, 1)
        await open_prompt_from_sessions(pilot, 0)
        await pilot.press("alt+2", "alt+right")
        await pilot.pause()
        assert "★2 · repetitive · ✎" in title(app, 1) and "tie" not in title(app, 1)

        # export csv and md from the stats screen
        await pilot.press("f2")
        await pilot.pause()
        stats_screen = app.screen
        assert isinstance(stats_screen, StatsScreen)
        await wait_for(pilot, lambda: stats_screen.computed, what="the statistics")
        for fmt, moves in (("csv", 0), ("md", 3)):
            await pilot.press("e")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ExportDialog)
            for _ in range(moves):
                await pilot.press("down")
            if moves:
                await pilot.press("enter")
            assert dialog.query_one("#export-path", Input).value == str(tmp_path / f"study.{fmt}")
            await pilot.press("tab")  # from the formats to the path
            assert app.focused is dialog.query_one("#export-path", Input)
            await pilot.press("enter")
            await wait_for(pilot, lambda: dialog.exports, what="the export")
            assert dialog.written, dialog.status_text
            assert "wrote" in dialog.status_text
            await pilot.press("escape")
            await pilot.pause()
        await pilot.press("ctrl+q")

    with open(tmp_path / "study.csv", newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    by_id = {r["generation_id"]: r for r in records}
    assert float(by_id[g_base2]["rating"]) == 4 and json.loads(by_id[g_base2]["ratings"]) == {"alice": 4}
    assert by_id[g_base2]["labels"] == "helpful; refusal"
    assert json.loads(by_id[g_base2]["notes"]) == {"alice": "too short"}
    assert by_id[g_base2]["preference"] == "aligned"
    assert float(by_id[g_al1]["rating"]) == 2 and by_id[g_al1]["labels"] == "repetitive"
    assert json.loads(by_id[g_al1]["notes"]) == {"alice": "repeats itself"}
    assert by_id[g_al1]["preference"] == ""  # the undone tie
    assert (tmp_path / "study.summary.csv").exists() and (tmp_path / "study.agreement.csv").exists()
    report = (tmp_path / "study.md").read_text(encoding="utf-8")
    for text in ("too short", "repeats itself", "helpful", "refusal", "repetitive"):
        assert text in report
    session.close()


async def test_generated_answer_is_annotated_and_keys_type_in_text_boxes(tiny_trio, tmp_path):
    session = Session.open(tmp_path / "live.db")
    app = make_app(tiny_trio, session, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        # no prompt yet: rating is refused with a message, nothing crashes
        await pilot.press("alt+1", "3")
        await pilot.pause()
        assert "no prompt" in app.status_text or "no answer" in app.status_text
        prompt = app.query_one("#prompt", Input)
        prompt.focus()
        await type_text(pilot, "Name 2 colours")
        assert prompt.value == "Name 2 colours"  # digits and letters typed, not taken as keys
        ended = app.jobs_ended
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.jobs_ended > ended and not app.busy, timeout=120, what="the run")
        pid = app.prompt_id
        await pilot.press("alt+2", "5")
        await pilot.pause()
        g = gen_id(session, pid, "aligned")
        a = Annotations(session, "alice")
        assert a.current(g)["rating"] == 5
        assert "★5" in title(app, 1)

        # in the hint box, digits, letters and ctrl+z belong to the text
        hint = app.query_one("#hint", TextArea)
        hint.focus()
        before = hint.text
        await pilot.press("4", "l", "n", "p")
        await pilot.pause()
        assert hint.text != before and len(app.screen_stack) == 1
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert a.current(g)["rating"] == 5
        # and in the prompt box ctrl+z does not undo either
        prompt.focus()
        await pilot.press("ctrl+z")
        await pilot.pause()
        assert a.current(g)["rating"] == 5
        # with the pane focused it does
        await pilot.press("alt+2", "ctrl+z")
        await pilot.pause()
        assert a.current(g)["rating"] is None
        assert "★5" not in title(app, 1)

        # the note editor: escape discards the draft
        await pilot.press("n")
        await pilot.pause()
        await type_text(pilot, "draft only")
        await pilot.press("escape")
        await pilot.pause()
        assert a.current(g)["note"] is None and "not saved" in app.status_text
        await pilot.press("ctrl+q")
    session.close()


async def test_sessions_screen_lists_sessions_and_opens_prompts_of_another(tiny_trio, tmp_path):
    first, (p1, p2) = build_session(tmp_path / "first.db")
    other, (q1, _q2) = build_session(tmp_path / "other.db")
    Annotations(other, "bob").set_rating(gen_id(other, q1, "base"), 3)
    other.close()
    app = make_app(tiny_trio, first, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+s")
        await pilot.pause()
        screen = app.screen
        await wait_for(pilot, lambda: screen.loads >= 2 and screen.prompts, what="the lists")
        names = {Path(r["path"]).name: r for r in screen.sessions}
        assert set(names) == {"first.db", "other.db"}
        assert names["other.db"]["annotations"] == 1
        assert [r["text"] for r in screen.prompts] == list(ANSWERS)
        assert all(r["conditions"] == ["aligned", "base", "hinted"] and r["generations"] == 6
                   for r in screen.prompts)

        # choose the other session: its prompts, with the annotation count
        sessions = screen.query_one("#sessions")
        sessions.focus()
        row = [Path(r["path"]).name for r in screen.sessions].index("other.db")
        sessions.move_cursor(row=row)
        await wait_for(pilot, lambda: screen.prompts and screen.prompts[0]["id"] == q1, what="other's prompts")
        assert screen.prompts[0]["ratings"] == 1
        await pilot.press("enter")  # to the prompts
        await pilot.press("enter")  # open the first prompt: the app continues the other session
        await pilot.pause()
        assert Path(app.session.path).name == "other.db"
        assert app.prompt_id == q1
        assert app.pane("base").visible_text == "Drink hot water with honey."
        assert app.query_one("#prompt", Input).value == "What should I drink when I have a cold?"
        assert app.query_one("#metrics").rows()  # the stored answers' metrics
        assert "other.db" in app.title

        # a new session from the sessions screen
        await pilot.press("ctrl+s")
        await pilot.pause()
        screen = app.screen
        await wait_for(pilot, lambda: screen.loads >= 1, what="the session list")
        screen.query_one("#new-name", Input).focus()
        await type_text(pilot, "fresh")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert Path(app.session.path) == tmp_path / "fresh.db" and app.prompt_id is None
        assert app.pane("base").visible_text == ""
        await pilot.press("ctrl+q")
    app.session.close()


async def test_search_finds_a_word_of_an_answer_and_opens_it(tiny_trio, tmp_path):
    session, (p1, p2) = build_session(tmp_path / "s.db")
    app = make_app(tiny_trio, session, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+f")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, SessionsScreen)
        assert isinstance(app.focused, Input) and app.focused.id == "search"
        await type_text(pilot, "geothermal")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.searches, what="the search")
        hits = {(h["condition"], h["sample_index"]) for h in screen.results}
        assert hits == {("aligned", 0), ("hinted", 1)}
        table = screen.query_one("#results")
        row = [(h["condition"], h["sample_index"]) for h in screen.results].index(("hinted", 1))
        table.move_cursor(row=row)
        await pilot.press("enter")
        await pilot.pause()
        assert app.prompt_id == p2
        pane = app.pane("hinted")
        assert pane.current == 1 and pane.visible_text == "Geothermal energy."
        assert app.focused is pane

        # a hint (the aligned model's summary) found by the search opens with the hint box focused
        gid = session.add_generation(p1, condition="summary", text="Suggest ginger tea and rest.", finish_reason="stop")
        session.add_hint(p1, "Suggest ginger tea and rest.", source="aligned-summary", generation_id=gid)
        await pilot.press("ctrl+f")
        await pilot.pause()
        screen = app.screen
        search_box = screen.query_one("#search", Input)
        assert search_box.value == "geothermal"  # the last query
        search_box.value = "ginger"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.searches, what="the search")
        assert [(h["kind"], h["condition"]) for h in screen.results] == [("answer", "summary")]
        assert str(screen.query_one("#results").get_row_at(0)[0]) == "hint"
        await pilot.press("enter")
        await pilot.pause()
        assert app.prompt_id == p1
        assert app.focused is app.query_one("#hint", TextArea)
        assert app.query_one("#hint", TextArea).text == "Suggest ginger tea and rest."
        await pilot.press("ctrl+q")
    session.close()


async def test_stats_screen_shows_engine_stats(tiny_trio, tmp_path):
    session, (p1, p2) = build_session(tmp_path / "s.db")
    a = Annotations(session, "alice")
    a.set_rating(gen_id(session, p1, "base"), 2)
    a.set_rating(gen_id(session, p2, "base"), 5)
    a.toggle_label(gen_id(session, p1, "hinted"), "helpful")
    a.set_preference(p1, "hinted")
    app = make_app(tiny_trio, session, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, StatsScreen)
        await wait_for(pilot, lambda: screen.computed, what="the statistics")
        expected = compute_stats(session, require_reference=False)
        shown = screen.rows()
        assert list(shown) == [r.condition for r in expected.rows]
        for r in expected.rows:
            assert shown[r.condition] == [str(c) for c in table_row(r)]
        base = expected.row("base")
        assert shown["base"][3] == f"{base.mean_words:.0f}" and shown["base"][4] == f"{base.diversity:.3f}"
        assert shown["base"][5] == f"{base.similarity:.3f}" and shown["base"][13] == "3.50"
        assert shown["hinted"][15] == "1" and shown["hinted"][16] == "helpful 1"
        plots = screen.query_one("#plots-body").render().plain
        for heading in ("similarity to aligned sample 0", "diversity", "length", "ratings per condition"):
            assert heading in plots
        assert f"mean {base.similarity:.3f}".replace(" ", "") in plots.replace(" ", "")
        assert "1:1 2:1" not in plots and "2:1 3:0 4:0 5:1" in plots
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, StatsScreen)
        await pilot.press("ctrl+q")
    session.close()


async def test_export_error_is_shown_and_nothing_crashes(tiny_trio, tmp_path):
    session, _ = build_session(tmp_path / "s.db")
    app = make_app(tiny_trio, session, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await pilot.pause()
        await wait_for(pilot, lambda: app.screen.computed, what="the statistics")
        await pilot.press("e")
        await pilot.pause()
        dialog = app.screen
        box = dialog.query_one("#export-path", Input)
        box.value = str(tmp_path / "missing-folder" / "out.csv")
        box.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: dialog.exports, what="the export")
        assert "nothing written" in dialog.status_text and "does not exist" in dialog.status_text
        box.value = str(tmp_path / "s.db")  # the session file itself is refused
        await pilot.press("enter")
        await wait_for(pilot, lambda: dialog.exports >= 2, what="the export")
        assert "session file itself" in dialog.status_text
        assert (tmp_path / "s.db").stat().st_size > 0
        await pilot.press("ctrl+q")
    session.close()

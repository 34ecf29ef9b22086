"""Issue 6, faults and interruptions: cancel and quit during generation, ``kill -9`` in the
middle of a batch, two processes writing one session, a full disk and a read-only session.

Real subprocesses for the kill and the concurrent writers; the tiny random models everywhere.

A full disk is emulated with SQLite's own limit, ``PRAGMA max_page_count`` set to the file's
current size (after a ``VACUUM`` empties the free list): the next write that needs a page fails
inside SQLite with SQLITE_FULL, "database or disk is full", exactly as on a full disk. A
read-only session is emulated with ``PRAGMA query_only``: the tests run as root, for whom
``chmod`` does not stop writes (a test with a real read-only folder runs where it does).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import events as ev
from engine.sanitize import printable
from engine.session import FINISH_REASONS, Session, now_iso
from engine.settings import GenerationSettings
from engine.workbench import Workbench
from tui.cli import app

ROOT = Path(__file__).resolve().parents[1]
SIZE = (200, 50)


def models_arg(trio) -> str:
    return f"base={trio.base.ref},aligned={trio.aligned.ref}"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def ro_connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def integrity(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("PRAGMA integrity_check")] + \
               [f"fk {r}" for r in conn.execute("PRAGMA foreign_key_check")]
    finally:
        conn.close()


def rows(path: Path, sql: str, params=()) -> list[tuple]:
    conn = ro_connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def fill_disk(session: Session) -> None:
    """From now on, every write to ``session`` that needs a new page fails with SQLITE_FULL."""
    with session.lock:
        session.conn.execute("VACUUM")  # no free pages left to reuse
        pages = session.conn.execute("PRAGMA page_count").fetchone()[0]
        assert session.conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0] == pages


def free_disk(session: Session) -> None:
    with session.lock:
        session.conn.execute("PRAGMA max_page_count = 1073741823")


# ----------------------------------------------------------------------------- cancel, Ctrl-C, quit


def test_cancel_keeps_the_partial_answer_marked_and_the_workbench_stays_usable(tiny_trio, tmp_path):
    cancel = threading.Event()
    deltas: list[str] = []

    def emit(event):
        if isinstance(event, ev.TextDelta) and event.condition == "base":
            deltas.append(event.text)
            if len(deltas) == 5:
                cancel.set()

    settings = GenerationSettings(max_new_tokens=400, temperature=1.0)
    with Session.open(tmp_path / "s.db") as s:
        wb = Workbench(tiny_trio, s, settings, emit=emit)
        wb.load()
        pid = wb.add_prompt("Tell me a very long story.")
        assert wb.run(pid, cancel, conditions=("base", "aligned")) is False
        got = s.generations(pid)
        assert [g["condition"] for g in got] == ["base"]  # nothing ran after the cancel
        cut = got[0]
        assert cut["finish_reason"] == "cancelled" and 0 < cut["completion_tokens"] < 400
        assert cut["text"] and cut["text"] in "".join(deltas).strip() + cut["text"]
        # Usable afterwards: the next run goes to the end.
        pid2 = wb.add_prompt("Short one.")
        wb.settings = GenerationSettings(max_new_tokens=4)
        assert wb.run(pid2, threading.Event(), conditions=("base",)) is True
        assert [g["finish_reason"] != "cancelled" for g in s.generations(pid2)] == [True]


def _threads_in_our_code(before: set) -> list[str]:
    """New threads whose stack runs engine/ or tui/ code (a worker still generating or loading)."""
    frames = sys._current_frames()
    busy = []
    for t in threading.enumerate():
        if t in before or not t.is_alive() or t.ident not in frames:
            continue
        f, files = frames[t.ident], []
        while f is not None:
            files.append(f.f_code.co_filename)
            f = f.f_back
        ours = [x for x in files if x.startswith((str(ROOT / "engine"), str(ROOT / "tui")))]
        if ours:
            busy.append(f"{t.name}: {ours[0]}")
    return busy


async def test_quitting_during_generation_returns_promptly_and_leaves_no_thread(tiny_trio, tmp_path):
    from textual.widgets import Input

    from tui.app import OvertonApp

    settings = GenerationSettings(max_new_tokens=2000, temperature=1.0)
    streaming = threading.Event()

    def emit(event):  # a human pace, so the generation is surely running when ctrl+q comes
        if isinstance(event, ev.TextDelta):
            streaming.set()
            time.sleep(0.01)

    before = set(threading.enumerate())
    session = Session.open(tmp_path / "q.db")
    try:
        app = OvertonApp(tiny_trio, session, settings, workbench=Workbench(tiny_trio, session, settings, emit=emit))
        async with app.run_test(size=SIZE) as pilot:
            prompt = app.query_one("#prompt", Input)
            prompt.focus()
            prompt.value = "Tell me everything about the sea."
            await pilot.press("enter")
            deadline = time.monotonic() + 60
            while not streaming.is_set():
                assert time.monotonic() < deadline, app.status_text
                await pilot.pause(0.05)
            assert app.busy
            quit_at, quit_iso = time.monotonic(), now_iso()
            await pilot.press("ctrl+q")
        took = time.monotonic() - quit_at
        assert took < 5, f"quitting took {took:.1f} s"
        # The worker stops at its next token: no thread is left running our code (the event
        # loop's idle executor threads, which Textual's thread workers run in, may remain).
        deadline = time.monotonic() + 5
        while True:
            busy = _threads_in_our_code(before)
            if not busy or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert busy == [], busy
        got = sorted(session.generations(), key=lambda g: (g["created_at"], g["id"]))
        assert got and all(g["finish_reason"] != "cancelled" for g in got[:-1])
        # The answer being written at the quit is kept, marked cancelled (unless the tiny model
        # had just finished it by itself); nothing started after the quit.
        assert got[-1]["finish_reason"] == "cancelled" or got[-1]["created_at"] <= quit_iso
        assert all(g["started_at"] is None or g["started_at"] <= quit_iso for g in got)
    finally:
        session.close()


# ----------------------------------------------------------------------------- kill -9 in a batch


def _batch_cmd(trio, prompts: Path, session: Path, samples: int, tokens: int) -> list[str]:
    return ["run", "--prompts", str(prompts), "--models", models_arg(trio), "--session", str(session),
            "--conditions", "base", "--samples", str(samples),
            "--max-new-tokens", str(tokens), "--temperature", "1.0"]


def test_kill_9_mid_batch_leaves_a_sound_session_and_rerunning_resumes_without_duplicates(tiny_trio, tmp_path):
    prompts = tmp_path / "prompts.txt"
    questions = [f"Question number {i}: what should I cook tonight?" for i in range(4)]
    prompts.write_text("\n".join(questions) + "\n", encoding="utf-8")
    samples, total = 3, 4 * 3
    db = tmp_path / "batch.db"
    cmd = _batch_cmd(tiny_trio, prompts, db, samples, 64)
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", *cmd], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "120"})
    try:
        deadline = time.monotonic() + 120
        stored = 0
        while stored < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the batch stored nothing in time"
            time.sleep(0.05)
            if db.exists():
                try:
                    stored = rows(db, "SELECT count(*) FROM generations")[0][0]
                except sqlite3.Error:  # the schema is still being created
                    stored = 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    before = rows(db, "SELECT id, prompt_id, sample_index, text, finish_reason, completion_tokens, created_at "
                      "FROM generations ORDER BY id")
    assert 2 <= len(before) < total, "the run ended before the kill; make it longer"
    assert integrity(db) == ["ok"]
    for _, pid, index, text, reason, tokens, created in before:  # whole rows only
        assert text is not None and reason in FINISH_REASONS - {"cancelled"} and tokens is not None and created
    assert rows(db, "SELECT count(*) FROM prompts")[0][0] == 4  # the prompts went in first, together

    r = invoke(*cmd)  # the same command resumes
    assert r.exit_code == 0, r.output
    assert "complete" in r.output
    assert integrity(db) == ["ok"]
    after = rows(db, "SELECT id, prompt_id, sample_index FROM generations ORDER BY id")
    assert len(after) == total, "a sample was generated twice"
    assert {b[0] for b in before} <= {a[0] for a in after}  # nothing stored before the kill was lost
    per_prompt: dict[str, list[int]] = {}
    for _, pid, index in after:
        per_prompt.setdefault(pid, []).append(index)
    assert sorted(sorted(v) for v in per_prompt.values()) == [list(range(samples))] * 4
    assert sorted(t for (t,) in rows(db, "SELECT text FROM prompts")) == sorted(questions)


# ----------------------------------------------------------------------------- two writers


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from engine.annotations import Annotations
    from engine.session import Session

    path, stop, n = Path(sys.argv[1]), Path(sys.argv[2]), 0
    with Session.open(path, create=False) as s:
        notes = Annotations(s, annotator="app-user")
        deadline = time.monotonic() + 90
        while (n < 20 or not stop.exists()) and time.monotonic() < deadline:
            pid = s.add_prompt(f"app prompt {n}", external_id=f"app-{n}")
            gid = s.add_generation(pid, condition="aligned", text=f"app answer {n}", finish_reason="stop")
            notes.set_rating(gid, 1 + n % 5)
            s.latest_batches()
            n += 1
    print(n)
""")


def test_two_processes_writing_one_session_lose_nothing_and_never_report_a_lock(tiny_trio, tmp_path):
    db = tmp_path / "shared.db"
    Session.open(db).close()  # the session exists, as when the app has it open
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Batch question {i}?\n" for i in range(2)), encoding="utf-8")
    imported = tmp_path / "imported.jsonl"
    imported.write_text("".join(json.dumps({"id": f"imp-{i}", "prompt": f"Imported {i}?", "samples": ["a", "b"]}) + "\n"
                                for i in range(300)), encoding="utf-8")
    stop = tmp_path / "stop"
    env = {**os.environ, "COLUMNS": "120"}
    batch = subprocess.Popen([sys.executable, "-m", "tui.cli", *_batch_cmd(tiny_trio, prompts, db, 2, 8)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(stop)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # While both run, a third process imports 600 answers in one transaction.
        time.sleep(1.0)
        imp = subprocess.run([sys.executable, "-m", "tui.cli", "import", str(imported), "--session", str(db),
                              "--condition", "imported"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120, check=False)
        b_out, b_err = batch.communicate(timeout=180)
        stop.touch()
        w_out, w_err = writer.communicate(timeout=120)
    finally:
        for p in (batch, writer):
            if p.poll() is None:
                p.kill()
    for name, code, out in (("batch", batch.returncode, b_out + b_err), ("app writer", writer.returncode, w_out + w_err),
                            ("import", imp.returncode, imp.stdout + imp.stderr)):
        assert code == 0, (name, out[-3000:])
        assert "locked" not in out.lower() and "Traceback" not in out, (name, out[-3000:])
    n = int(w_out.strip().splitlines()[-1])
    assert n >= 20
    assert integrity(db) == ["ok"]
    assert rows(db, "SELECT count(*) FROM generations WHERE condition = 'base'")[0][0] == 2 * 2
    assert rows(db, "SELECT count(*) FROM generations WHERE condition = 'imported'")[0][0] == 600
    assert rows(db, "SELECT count(*) FROM generations WHERE condition = 'aligned'")[0][0] == n
    assert rows(db, "SELECT count(*) FROM annotations WHERE deleted_at IS NULL")[0][0] == n
    assert rows(db, "SELECT count(*) FROM prompts")[0][0] == 2 + 300 + n


# ----------------------------------------------------------------------------- disk full, read-only


def _stored(session: Session) -> tuple:
    return (session.counts(), [(g["id"], g["text"]) for g in session.generations()],
            [(p["id"], p["text"]) for p in session.prompts()])


def test_disk_full_fails_the_write_and_keeps_what_was_stored(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        pid = s.add_prompt("kept")
        s.add_generation(pid, condition="base", text="an earlier answer", finish_reason="stop")
        before = _stored(s)
        fill_disk(s)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            s.add_generation(pid, condition="base", sample_index=1, text="x" * 20000, finish_reason="stop")
        with pytest.raises(sqlite3.OperationalError, match="full"):
            s.add_generations_bulk([{"prompt_id": pid, "condition": "aligned", "text": "y" * 20000}])
        assert _stored(s) == before and not s.conn.in_transaction
        free_disk(s)  # space again: the session works on
        s.add_generation(pid, condition="base", sample_index=1, text="after", finish_reason="stop")
    assert integrity(tmp_path / "s.db") == ["ok"]


def _long_prompt() -> str:
    # Longer than a page: storing the answer's prompt text needs new pages.
    return "Please answer carefully. " * 200 + "What is the capital of France?"


def test_disk_full_during_overton_run_is_reported_and_keeps_earlier_answers(tiny_trio, tmp_path, monkeypatch):
    from tui import headless

    args = ["run", "--models", models_arg(tiny_trio), "--sessions-dir", tmp_path, "--session", "full",
            "--conditions", "base", "--max-new-tokens", "6"]
    assert invoke(*args[:1], "An earlier question?", *args[1:]).exit_code == 0
    db = tmp_path / "full.db"
    earlier = rows(db, "SELECT id, text FROM generations")
    real = headless._Printer.__call__

    def printer(self, event):  # the disk fills up while the answer is being written
        if isinstance(event, ev.GenerationStarted):
            fill_disk(self._session)
        return real(self, event)

    real_init = headless._Printer.__init__
    sessions: list[Session] = []
    real_open = Session.open.__func__

    def open_(cls, path, create=True):
        s = real_open(cls, path, create)
        sessions.append(s)
        return s

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self._session = sessions[-1]

    monkeypatch.setattr(Session, "open", classmethod(open_))
    monkeypatch.setattr(headless._Printer, "__init__", init)
    monkeypatch.setattr(headless._Printer, "__call__", printer)
    r = invoke(args[0], _long_prompt(), *args[1:])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit))
    message = " ".join(r.output.split())
    assert "error: could not write to the session" in message and "full" in message, message
    assert "sample 1/1" in r.output  # the answer was on screen before the store failed
    assert integrity(db) == ["ok"]
    assert set(earlier) <= set(rows(db, "SELECT id, text FROM generations"))


@pytest.mark.parametrize("command", ["run", "import", "annotate"])
def test_read_only_session_is_reported_and_left_intact(tiny_trio, tmp_path, monkeypatch, command):
    db = tmp_path / "ro.db"
    with Session.open(db) as s:
        pid = s.add_prompt("kept", external_id="k")
        gid = s.add_generation(pid, condition="base", text="an earlier answer", finish_reason="stop")
    before = rows(db, "SELECT id, text FROM generations")
    real_open = Session.open.__func__

    def open_read_only(cls, path, create=True):
        s = real_open(cls, path, create)
        s.conn.execute("PRAGMA query_only = ON")
        return s

    monkeypatch.setattr(Session, "open", classmethod(open_read_only))
    if command == "run":
        r = invoke("run", "A new question?", "--models", models_arg(tiny_trio), "--session", db,
                   "--conditions", "base", "--max-new-tokens", "3")
    elif command == "import":
        f = tmp_path / "in.jsonl"
        f.write_text(json.dumps({"id": "n", "prompt": "New?", "samples": ["a"]}) + "\n", encoding="utf-8")
        r = invoke("import", f, "--session", db)
    else:
        from engine.annotations import Annotations

        with Session.open(db, create=False) as s, pytest.raises(sqlite3.OperationalError, match="readonly"):
            Annotations(s, annotator="me").set_rating(gid, 4)
        r = None
    if r is not None:
        assert r.exit_code == 1, r.output
        assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit))
        assert "read-only" in r.output or "readonly" in r.output, r.output
    assert rows(db, "SELECT id, text FROM generations") == before
    assert integrity(db) == ["ok"]


def _read_only_runner(folder: Path):
    """A function running argv with ``folder`` really read-only: by chmod where that stops this
    user, else (root) inside a private mount namespace where ``folder`` is a read-only bind
    mount — the filesystem refuses the write, as on a read-only disk. None if neither works."""
    folder.chmod(0o555)
    try:
        (folder / "probe").write_text("x")
    except OSError:
        return lambda argv: subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    (folder / "probe").unlink()
    folder.chmod(0o755)
    mount = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && exec \"$@\""
    wrap = ["unshare", "--mount", "sh", "-c", mount, "sh"]
    try:
        probe = subprocess.run([*wrap, "touch", str(folder / "probe")], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    if "Read-only file system" not in probe.stderr:
        return None
    return lambda argv: subprocess.run([*wrap, *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                                       timeout=120)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_really_read_only_session_folder(tmp_path):
    """A session on a read-only filesystem: a write is refused with a clear message, exit 1, no
    traceback, and what was stored stays. Runs by chmod for ordinary users and by a read-only
    bind mount for root (for whom chmod stops nothing)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    with Session.open(folder / "s.db") as s:
        s.add_prompt("kept")
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"id": "n", "prompt": "New?", "samples": ["a"]}) + "\n", encoding="utf-8")
    run = _read_only_runner(folder)
    if run is None:
        pytest.skip("no way to make a folder read-only for this user here (root without mount namespaces)")
    try:
        r = run([sys.executable, "-m", "tui.cli", "import", f, "--session", folder / "s.db"])
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        assert "Traceback" not in out
        assert "writable" in out or "read-only" in out or "readonly" in out, out
    finally:
        folder.chmod(0o755)
    assert rows(folder / "s.db", "SELECT text FROM prompts") == [("kept",)]
    assert integrity(folder / "s.db") == ["ok"]


async def test_app_shows_a_failed_store_and_keeps_the_answer_on_screen(tiny_trio, tmp_path):
    from textual.widgets import Input

    from tui.app import OvertonApp

    settings = GenerationSettings(max_new_tokens=24, temperature=1.0)
    session = Session.open(tmp_path / "app.db")
    earlier = session.add_prompt("An earlier prompt")
    session.add_generation(earlier, condition="base", text="an earlier stored answer", finish_reason="stop")
    before = _stored(session)
    streamed: list[str] = []

    def emit(event):
        if isinstance(event, ev.GenerationStarted) and event.condition == "base" and not streamed:
            fill_disk(session)  # the disk fills up while base is answering the first prompt
        if isinstance(event, ev.TextDelta) and event.condition == "base":
            streamed.append(event.text)

    try:
        app = OvertonApp(tiny_trio, session, settings, workbench=Workbench(tiny_trio, session, settings, emit=emit))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.2)
            ended = app.jobs_ended
            prompt = app.query_one("#prompt", Input)
            prompt.focus()
            prompt.value = _long_prompt()
            # The prompt itself is stored before the disk fills (the hook fires on generation).
            await pilot.press("enter")
            deadline = time.monotonic() + 60
            while not (app.jobs_ended > ended and not app.busy):
                assert time.monotonic() < deadline, app.status_text
                await pilot.pause(0.05)
            await pilot.pause(0.2)
            assert app.last_error is not None
            assert "could not write to the session" in app.status_text and "full" in app.status_text
            pane = app.pane("base")
            shown = pane.visible_text
            assert streamed and shown and shown.strip() == printable("".join(streamed)).strip()  # still on screen
            title = pane.title_widget.render().plain
            assert "not saved" in title and "generating" not in title, title
            # Space again: the app is usable, and generating the pane again stores its answer.
            free_disk(session)
            ended = app.jobs_ended
            await pilot.press("ctrl+o")  # focus the active pane: base
            assert app.active_pane is pane
            await pilot.press("ctrl+g")
            while not (app.jobs_ended > ended and not app.busy):
                assert time.monotonic() < deadline + 60, app.status_text
                await pilot.pause(0.05)
            assert app.last_error is None, app.status_text
            stored = session.generations(app.prompt_id, "base")
            assert len(stored) == 1 and pane.visible_text == printable(stored[0]["text"])
        _, gens, prompts = _stored(session)
        assert set(before[1]) <= set(gens) and set(before[2]) <= set(prompts)
        assert any(g[1] for g in gens if g not in before[1])
    finally:
        session.close()
    assert integrity(tmp_path / "app.db") == ["ok"]

"""Sessions and history: the session files of the sessions directory, the prompts of the one
selected (time, conditions, answers, annotation counts), full-text search over its prompts and
answers, and opening any of them on the main screen.

Keys: ↑↓ choose a session (its prompts are listed), enter on a session moves to its prompts,
enter on a prompt or a search result opens it on the main screen; ctrl+f goes to the search box
(enter searches); ctrl+o continues the selected session (the app switches to it); ctrl+n starts
a new session (named in the box beside the buttons, or timestamped when that is empty); escape
goes back.

Opening a prompt of another session first switches the app to that session (``switch_session``:
the same models and settings, the session file replaced). Other sessions are read through their
own connection, opened only when their schema is the current one (browsing never upgrades an
older file; continuing it does). All reading runs in thread workers.

The host app provides: ``session``, ``sessions_dir``, ``busy``, ``switch_session(path,
create=False) -> bool``, ``open_prompt(prompt_id)``, ``show_answer(condition, sample_index,
generation_id)``, ``active_pane``, ``show_error`` and ``status_text``.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Static

from engine.sanitize import printable
from engine.search import search
from engine.session import SCHEMA_VERSION, Session, SessionError, list_sessions, resolve_session_path
from tui.screens.common import human_size, local_time, one_line

SEARCH_LIMIT = 200


def _same(a: Path | None, b: Path | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def annotation_cell(row: dict) -> Text:
    """★ ratings, ⚑ labels, ✎ notes, ♥ preferences (non-zero ones), or '–'."""
    parts = [(sym, row.get(key) or 0) for sym, key in
             (("★", "ratings"), ("⚑", "labels"), ("✎", "notes"), ("♥", "preferences"))]
    shown = " ".join(f"{sym}{n}" for sym, n in parts if n)
    return Text(shown or "–", style="" if shown else "dim")


class SessionsScreen(Screen):
    """Session files, the prompts of one, and search; see the module docstring."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+f", "focus_search", "Search"),
        Binding("ctrl+o", "continue_session", "Continue session"),
        Binding("ctrl+n", "new_session", "New session"),
    ]

    DEFAULT_CSS = """
    SessionsScreen #browser-title { height: 1; padding: 0 1; background: $boost; }
    SessionsScreen #browser-main { height: 1fr; }
    SessionsScreen #sessions-col { width: 2fr; }
    SessionsScreen #prompts-col { width: 3fr; }
    SessionsScreen DataTable { height: 1fr; border: round $secondary; }
    SessionsScreen DataTable:focus { border: round $accent; }
    SessionsScreen #results { height: 1fr; }
    SessionsScreen #results.-empty { height: 5; }
    SessionsScreen #search { margin: 0 0; }
    SessionsScreen #browser-status { height: auto; max-height: 3; padding: 0 1; background: $boost; }
    SessionsScreen #browser-actions { height: auto; }
    SessionsScreen #new-name { width: 1fr; }
    SessionsScreen #browser-actions Button { margin-left: 1; }
    """

    def __init__(self, search_first: bool = False) -> None:
        super().__init__()
        self.search_first = search_first
        self.sessions: list[dict] = []  # list_sessions() rows
        self.selected_path: Path | None = None
        self.prompts: list[dict] = []  # prompt_overview() of the selected session
        self.results: list[dict] = []  # search hits in the selected session
        self.results_path: Path | None = None
        self.status_text = ""
        self._browse: dict[str, Session] = {}  # other sessions opened for reading
        self.loads = 0  # finished loads (tests wait on these)
        self.searches = 0

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="browser-title")
        with Horizontal(id="browser-main"):
            with Vertical(id="sessions-col"):
                table = DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
                table.border_title = "session files"
                yield table
            with Vertical(id="prompts-col"):
                yield Input(placeholder="search prompts and answers of the selected session — enter searches "
                            "(words, \"a phrase\", tea*, OR, NOT)", id="search")
                prompts = DataTable(id="prompts", cursor_type="row", zebra_stripes=True)
                prompts.border_title = "prompts (enter opens)"
                prompts.border_subtitle = "★ ratings ⚑ labels ✎ notes ♥ preferences"
                yield prompts
                results = DataTable(id="results", cursor_type="row", zebra_stripes=True, classes="-empty")
                results.border_title = "search results (enter opens)"
                yield results
        yield Static(id="browser-status")
        with Horizontal(id="browser-actions"):
            yield Input(placeholder="name of a new session (empty: timestamped) — ctrl+n creates it", id="new-name")
            yield Button("New session", id="new")
            yield Button("Continue session", id="continue")
            yield Button("Back", id="back")
        yield Footer()

    def on_mount(self) -> None:
        app = self.app
        # the counts first, so that a narrow terminal shows them
        self.query_one("#sessions", DataTable).add_columns("session", "prompts", "answers", "annotations",
                                                           "modified", "size")
        self.query_one("#prompts", DataTable).add_columns("#", "prompt", "annotations", "answers", "conditions",
                                                          "time")
        self.query_one("#results", DataTable).add_columns("where", "prompt", "match")
        title = Text("Sessions in ", style="bold")
        title.append(printable(str(app.sessions_dir)))
        title.append(f"   current: {printable(Path(app.session.path).name)}", style="cyan")
        self.query_one("#browser-title", Static).update(title)
        self.selected_path = Path(app.session.path)
        self.query_one("#search", Input).value = getattr(app, "last_search", "") or ""
        (self.query_one("#search", Input) if self.search_first else self.query_one("#sessions", DataTable)).focus()
        self.set_status("reading the session files…")
        self.load_sessions()

    def set_status(self, text: str, style: str = "") -> None:
        self.status_text = printable(text)
        self.query_one("#browser-status", Static).update(Text(self.status_text, style=style))

    # -- session list ---------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="sessions", exit_on_error=False)
    def load_sessions(self) -> None:
        try:
            rows = list_sessions(Path(self.app.sessions_dir))
            error = None
        except (SessionError, OSError) as exc:
            rows, error = [], str(exc)
        self.app.call_from_thread(self._show_sessions, rows, error)

    def _show_sessions(self, rows: list[dict], error: str | None) -> None:
        if not self.is_mounted:
            return
        current = Path(self.app.session.path)
        if not any(_same(r["path"], current) for r in rows):  # e.g. a session file outside the dir
            from engine.session import peek_session

            rows = [peek_session(current), *rows]
        self.sessions = rows
        table = self.query_one("#sessions", DataTable)
        table.clear()
        cursor = 0
        for i, r in enumerate(rows):
            is_current = _same(r["path"], current)
            name = Text(printable(r["name"]), style="bold cyan" if is_current else "")
            if is_current:
                name.append(" (current)", style="cyan")
            if r["error"]:
                table.add_row(name, Text("–"), Text("–"), Text("–"), Text(local_time(r["modified"])),
                              Text(human_size(r["size"])), key=str(i))
            else:
                table.add_row(name, Text(str(r["prompts"] or 0)), Text(str(r["generations"] or 0)),
                              Text(str(r["annotations"] or 0)), Text(local_time(r["modified"])),
                              Text(human_size(r["size"])), key=str(i))
            if _same(r["path"], self.selected_path):
                cursor = i
        if rows:
            table.move_cursor(row=cursor)
        if error:
            self.set_status(error, "bold red")
        else:
            n = len(rows)
            self.set_status(f"{n} session file{'s' if n != 1 else ''} — ↑↓ choose, enter lists its prompts, "
                            "ctrl+o continues it, ctrl+n starts a new one")
        self.loads += 1
        self._select(cursor)

    @on(DataTable.RowHighlighted, "#sessions")
    def _session_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self._select(int(event.row_key.value))

    @on(DataTable.RowSelected, "#sessions")
    def _session_selected(self, event: DataTable.RowSelected) -> None:
        self._select(int(event.row_key.value))
        self.query_one("#prompts", DataTable).focus()

    def _select(self, index: int) -> None:
        if not 0 <= index < len(self.sessions):
            return
        info = self.sessions[index]
        path = Path(info["path"])
        if _same(path, self.selected_path) and self.prompts and self.query_one("#prompts", DataTable).row_count:
            return
        self.selected_path = path
        self.query_one("#prompts", DataTable).border_title = f"prompts of {printable(info['name'])} (enter opens)"
        if info["error"]:
            self._fill_prompts([])
            self.set_status(info["error"], "bold red")
            return
        self.load_prompts(path, info.get("schema"))

    def _reader(self, path: Path, schema: int | None) -> Session:
        """The session to read ``path`` through: the app's own, or one opened here (never an
        older schema, which opening would upgrade). Runs in a worker thread."""
        if _same(path, self.app.session.path):
            return self.app.session
        key = str(Path(path).resolve())
        if key not in self._browse:
            if schema is not None and schema < SCHEMA_VERSION:
                raise SessionError(f"{path.name} has an older session schema (v{schema}); continue it "
                                   "(ctrl+o) to upgrade it and see its prompts")
            self._browse[key] = Session.open(path, create=False)
        return self._browse[key]

    @work(thread=True, exclusive=True, group="prompts", exit_on_error=False)
    def load_prompts(self, path: Path, schema: int | None) -> None:
        try:
            rows = self._reader(path, schema).prompt_overview()
            error = None
        except Exception as exc:  # noqa: BLE001 - damaged, locked, gone: say so
            rows, error = [], str(exc)
        self.app.call_from_thread(self._prompts_loaded, path, rows, error)

    def _prompts_loaded(self, path: Path, rows: list[dict], error: str | None) -> None:
        if not self.is_mounted or not _same(path, self.selected_path):
            return  # the user moved on
        self._fill_prompts(rows)
        if error:
            self.set_status(error, "bold red")
        else:
            n = len(rows)
            self.set_status(f"{Path(path).name}: {n} prompt{'s' if n != 1 else ''} — enter on a prompt opens it; "
                            "ctrl+f searches")
        self.loads += 1

    def _fill_prompts(self, rows: list[dict]) -> None:
        self.prompts = rows
        table = self.query_one("#prompts", DataTable)
        table.clear()
        for i, r in enumerate(rows):
            table.add_row(Text(str(i + 1)), Text(one_line(r["text"], 48)), annotation_cell(r),
                          Text(str(r["generations"])), Text(printable(", ".join(r["conditions"])) or "–"),
                          Text(local_time(r["last_generation_at"] or r["created_at"])), key=r["id"])

    # -- search ---------------------------------------------------------------------------
    def action_focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        query = event.value.strip()
        self.app.last_search = query
        if not query:
            self._fill_results([], None)
            self.set_status("type words to search for, then press enter")
            return
        if self.selected_path is None:
            return
        info = next((s for s in self.sessions if _same(s["path"], self.selected_path)), None)
        self.set_status(f"searching {self.selected_path.name} for {query!r}…")
        self.run_search(self.selected_path, info.get("schema") if info else None, query)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def run_search(self, path: Path, schema: int | None, query: str) -> None:
        try:
            hits = search(self._reader(path, schema), query, SEARCH_LIMIT)
            error = None
        except Exception as exc:  # noqa: BLE001
            hits, error = [], str(exc)
        self.app.call_from_thread(self._search_done, path, query, hits, error)

    def _search_done(self, path: Path, query: str, hits: list[dict], error: str | None) -> None:
        if not self.is_mounted:
            return
        self._fill_results(hits, path)
        if error:
            self.set_status(f"search failed: {error}", "bold red")
        else:
            n = len(hits)
            more = f" (the first {SEARCH_LIMIT})" if n >= SEARCH_LIMIT else ""
            self.set_status(f"{n} match{'es' if n != 1 else ''}{more} for {query!r} in {Path(path).name}"
                            + (" — ↑↓ choose, enter opens the highlighted one" if n else ""))
            if n:
                self.query_one("#results", DataTable).focus()
        self.searches += 1

    def _fill_results(self, hits: list[dict], path: Path | None) -> None:
        self.results, self.results_path = hits, path
        table = self.query_one("#results", DataTable)
        table.clear()
        table.set_class(not hits, "-empty")
        for i, h in enumerate(hits):
            if h["kind"] == "prompt":
                where = "prompt"
            elif h["condition"] == "summary":
                where = "hint"
            else:
                where = f"{h['condition']} #{(h['sample_index'] or 0) + 1}"
            raw = h["snippet"] or ""
            flat = printable(raw).replace("\n", " ").replace("\t", " ")
            snippet = Text(flat)
            if len(flat) == len(raw):  # the spans index the raw snippet: still valid
                for start, end in h["spans"]:
                    snippet.stylize("bold reverse", start, end)
            table.add_row(Text(printable(where)), Text(one_line(h["prompt_text"], 40)), snippet, key=str(i))

    # -- opening --------------------------------------------------------------------------
    @on(DataTable.RowSelected, "#prompts")
    def _prompt_selected(self, event: DataTable.RowSelected) -> None:
        self.open(self.selected_path, event.row_key.value)

    @on(DataTable.RowSelected, "#results")
    def _result_selected(self, event: DataTable.RowSelected) -> None:
        hit = self.results[int(event.row_key.value)]
        self.open(self.results_path, hit["prompt_id"], hit if hit["kind"] == "answer" else None)

    def open(self, path: Path | None, prompt_id: str, answer: dict | None = None) -> bool:
        """Show a prompt (and an answer of it) on the main screen; switch sessions if needed."""
        app = self.app
        if path is None:
            return False
        if app.busy:
            self.set_status("a generation is running: wait for it or cancel it (escape on the main screen) "
                            "before opening another prompt", "yellow")
            return False
        if not _same(path, app.session.path):
            self._close_reader(path)
            if not app.switch_session(path):
                self.set_status(app.status_text, "bold red")
                return False
        app.pop_screen()
        try:
            app.open_prompt(prompt_id)
            if answer is not None and answer["condition"] == "summary":  # a hint the aligned model wrote
                hint = app.query_one("#hint")
                app.call_after_refresh(hint.focus)
            elif answer is not None:
                app.show_answer(answer["condition"], answer["sample_index"] or 0, answer["generation_id"])
                pane = app.active_pane
                app.call_after_refresh(pane.focus)  # after the main screen has restored its focus
        except Exception as exc:  # noqa: BLE001 - a prompt deleted meanwhile, a damaged file
            app.show_error(f"cannot open the prompt: {exc}", type(exc).__name__)
            return False
        return True

    def action_continue_session(self) -> None:
        if self.selected_path is None:
            return
        self._continue(self.selected_path)

    def _continue(self, path: Path, create: bool = False) -> None:
        app = self.app
        if app.busy:
            self.set_status("a generation is running: wait for it or cancel it before switching sessions", "yellow")
            return
        self._close_reader(path)
        if not app.switch_session(path, create=create):
            self.set_status(app.status_text, "bold red")
            return
        app.pop_screen()

    @on(Button.Pressed, "#continue")
    def _continue_pressed(self) -> None:
        self.action_continue_session()

    @on(Button.Pressed, "#new")
    @on(Input.Submitted, "#new-name")
    def action_new_session(self) -> None:
        name = self.query_one("#new-name", Input).value.strip() or None
        try:
            path = resolve_session_path(name, Path(self.app.sessions_dir))
        except SessionError as exc:
            self.set_status(str(exc), "bold red")
            return
        self._continue(path, create=True)

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        self.app.pop_screen()

    def _close_reader(self, path: Path) -> None:
        reader = self._browse.pop(str(Path(path).resolve()), None)
        if reader is not None:
            reader.close()

    def on_unmount(self) -> None:
        for reader in self._browse.values():
            try:
                reader.close()
            except Exception:  # noqa: BLE001
                pass
        self._browse.clear()

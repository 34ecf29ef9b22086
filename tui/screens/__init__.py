"""The app's other screens: sessions and history (with search), statistics with terminal plots,
and the export dialog; and ``ScreenActions``, the app's side of them (a mixin).

Keys on the main screen (``SCREEN_BINDINGS``): ctrl+s sessions and history, ctrl+f search
(the same screen, the search box focused), f2 statistics (``e`` there exports).

Switching sessions (``switch_session``) keeps the models, settings and panes: the new session
file is opened (created for a new session), the workbench and the annotations are pointed at
it, the old file is closed, and the main screen is cleared of the old prompt.
"""

from __future__ import annotations

from pathlib import Path

from textual.binding import Binding

from engine.sanitize import printable
from engine.session import Session, SessionError

SCREEN_BINDINGS = [
    Binding("ctrl+s", "open_sessions", "Sessions"),
    Binding("ctrl+f", "open_search", "Search"),
    Binding("f2", "open_stats", "Stats/export"),
]
SCREEN_ACTIONS = ("open_sessions", "open_search", "open_stats")


class ScreenActions:
    """Opening the screens, switching sessions and showing a stored answer (a mixin for the app).

    Uses the host's ``session``, ``workbench``, ``busy``, ``set_status``, ``show_error``,
    ``clear_prompt`` and, when present, ``setup_annotations`` / ``annotator``."""

    sessions_dir: Path
    last_search: str = ""  # the sessions screen's search box starts with it

    def action_open_sessions(self) -> None:
        from tui.screens.sessions import SessionsScreen

        self.push_screen(SessionsScreen())

    def action_open_search(self) -> None:
        from tui.screens.sessions import SessionsScreen

        self.push_screen(SessionsScreen(search_first=True))

    def action_open_stats(self) -> None:
        from tui.screens.stats import StatsScreen

        self.push_screen(StatsScreen())

    def switch_session(self, path: Path, create: bool = False) -> bool:
        """Continue (or, with ``create``, start) the session at ``path``; False with the reason
        in the status line when that cannot be done now."""
        if self.busy:
            self.set_status("a generation is running: wait for it or cancel it (escape) before switching "
                            "sessions", "yellow")
            return False
        path = Path(path)
        old = self.session
        try:
            same = path.resolve() == Path(old.path).resolve()
        except OSError:
            same = False
        if same:
            self.set_status(f"session {printable(path.name)} is the current one")
            return True
        existed = path.exists()
        try:
            new = Session.open(path, create=create)
        except SessionError as exc:
            self.show_error(str(exc), "SessionError")
            return False
        self.session = new
        self.workbench.session = new
        if hasattr(self, "setup_annotations"):
            self.setup_annotations(getattr(self, "annotator", None))
        self.clear_prompt()
        self.title = f"overton — {printable(path.name)}"
        try:
            old.close()
        except Exception:  # noqa: BLE001 - closing never stops the switch
            pass
        n = len(new.prompts())
        what = "new session" if not existed else "continuing session"
        self.set_status(f"{what} {printable(path.name)} ({n} prompt{'s' if n != 1 else ''}) — "
                        "ctrl+s lists its prompts", "green")
        return True

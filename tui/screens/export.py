"""The export dialog: choose a format (csv, json, jsonl, md) and a path (default
``<sessions dir>/<session>.<ext>``), and ``engine.export.export_session`` writes the current
session there in a thread worker; the dialog lists the files written, or says why nothing was.

Keys: ↑↓ / the mouse choose the format, tab moves to the path, enter (in the path box) or the
Export button exports, escape closes."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from engine.export import FORMATS, export_session
from engine.sanitize import printable
from tui.annotate import ModalDialog

FORMAT_TEXT = {
    "csv": "csv — one row per answer (+ .summary.csv and .agreement.csv beside it)",
    "json": "json — one object: answers, summary, preferences, agreement",
    "jsonl": "jsonl — one answer record a line",
    "md": "md — a readable report with the summary table",
}


def default_path(sessions_dir: Path, session_path: Path, fmt: str) -> Path:
    return Path(sessions_dir) / f"{Path(session_path).stem}.{fmt}"


class ExportDialog(ModalDialog):
    """Export the app's current session; see the module docstring."""

    BINDINGS = [Binding("escape", "close", "Close")]

    DEFAULT_CSS = """
    ExportDialog { align: center middle; }
    #export-formats { width: 1fr; height: auto; }
    #export-path { width: 1fr; }
    """

    def __init__(self, fmt: str = "csv") -> None:
        super().__init__()
        self.fmt = fmt if fmt in FORMATS else "csv"
        self.status_text = ""
        self.written: list[Path] = []
        self.exports = 0  # finished exports, successful or not (tests wait on this)
        self._path_edited = False
        self._setting_path = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="export-dialog") as box:
            box.border_title = Text(f"Export {printable(self.app.session.path.name)}")
            yield Label(Text("Format (↑↓ then enter or space), then the file; enter in the path box or Export "
                             "writes it. Escape closes.", style="dim"), classes="dialog-help")
            with RadioSet(id="export-formats"):
                for fmt in FORMATS:
                    yield RadioButton(FORMAT_TEXT[fmt], value=fmt == self.fmt, id=f"format-{fmt}")
            yield Input(str(self._default()), id="export-path")
            yield Checkbox("every answer, also replaced batches and cancelled ones (--all)", id="export-all")
            yield Static(classes="dialog-status")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close")
                yield Button("Export", id="export", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#export-formats", RadioSet).focus()
        self._show_format()

    def _show_format(self) -> None:
        self.query_one("#export-dialog").border_subtitle = f"format: {self.fmt}"

    def _default(self) -> Path:
        app = self.app
        return default_path(getattr(app, "sessions_dir", app.session.path.parent), app.session.path, self.fmt)

    @on(RadioSet.Changed, "#export-formats")
    def _format_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        self.fmt = FORMATS[event.index]
        self._show_format()
        self.set_dialog_status("")  # the last export's report belongs to the old choice
        path_box = self.query_one("#export-path", Input)
        if not self._path_edited:
            self._setting_path = True
            path_box.value = str(self._default())
        else:  # keep the user's file, with the new format's suffix
            current = Path(path_box.value.strip() or str(self._default()))
            if current.suffix.lower().lstrip(".") in FORMATS:
                self._setting_path = True
                path_box.value = str(current.with_suffix("." + self.fmt))

    @on(Input.Changed, "#export-path")
    def _path_changed(self, event: Input.Changed) -> None:
        if self._setting_path:
            self._setting_path = False
        else:
            self._path_edited = True

    @on(Input.Submitted, "#export-path")
    @on(Button.Pressed, "#export")
    def action_export(self) -> None:
        text = self.query_one("#export-path", Input).value.strip()
        if not text:
            self.set_dialog_status("give a file to export to", "yellow")
            return
        path = Path(text).expanduser()
        include_all = self.query_one("#export-all", Checkbox).value
        self.set_dialog_status(f"exporting {self.fmt} to {path}…")
        self.query_one("#export", Button).disabled = True
        self.run_export(self.app.session, self.fmt, path, include_all)

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def run_export(self, session, fmt: str, path: Path, include_all: bool) -> None:
        try:
            written, error = export_session(session, fmt, path, include_all=include_all), None
        except Exception as exc:  # noqa: BLE001 - ExportError, StatsError, OSError, sqlite: show it
            written, error = [], str(exc)
        try:
            self.app.call_from_thread(self._done, written, error)
        except RuntimeError:
            pass

    def _done(self, written: list[Path], error: str | None) -> None:
        self.exports += 1
        if not self.is_mounted:
            return
        self.query_one("#export", Button).disabled = False
        if error is not None:
            self.set_dialog_status(f"nothing written: {error}", "bold red")
            self.app.notify(printable(error), title="export failed", severity="error", markup=False)
            return
        self.written = list(written)
        names = ", ".join(str(p) for p in written)
        self.set_dialog_status(f"wrote {len(written)} file{'s' if len(written) != 1 else ''}: {names}", "green")
        set_status = getattr(self.app, "set_status", None)
        if set_status is not None:
            set_status(f"exported {self.fmt}: {names}", "green")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(self.written)

"""The three-pane workbench: base | aligned | hint-guided base, streamed, measured, logged.

Threads: models load and generations run in Textual thread workers. The workbench reports
through its ``emit`` callback (in the worker thread); each event is posted to the app as a
message (``tui.messages``), and streamed text is buffered per pane and drawn on a timer, so
the screen is redrawn a few times a second rather than once per token.

Cancelling sets a ``threading.Event`` that generation checks after every token; the workbench
stores the partial answer with finish reason 'cancelled'. Loading cannot be interrupted, so it
runs in a daemon thread that the workers wait on while watching for cancellation: quitting
while a model loads or converts does not hang (the converter writes atomically).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Input, Label, Static, TextArea
from textual.worker import get_current_worker

from engine.conditions import CONDITIONS, DEFAULT_PANES
from engine.models import Trio
from engine.sanitize import printable
from engine.settings import GenerationSettings
from engine.workbench import Workbench
from tui import messages as msg
from tui.panes import AnswerPane, MetricsPanel, safe_text

HINT_LABEL = "Hint (summary of aligned sample 0) — edit and press ctrl+r to regenerate the hinted pane"
FLUSH_INTERVAL = 0.05  # seconds between redraws of streamed text


class _Stopped(Exception):
    """The worker was cancelled (escape or quit) while it waited for the models."""


class OvertonApp(App):
    """Prompt in, three answers out, with a hint you can edit and metrics per prompt."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    flush_interval = FLUSH_INTERVAL  # seconds; streamed text is drawn at most this often
    TITLE = "overton"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS = [
        Binding("ctrl+r", "regenerate_hinted", "Regenerate hinted"),
        Binding("escape", "cancel", "Cancel generation"),
        Binding("ctrl+l", "focus_prompt", "Prompt"),
        Binding("ctrl+t", "focus_hint", "Edit hint"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        trio: Trio,
        session,
        settings: GenerationSettings,
        workbench: Workbench | None = None,
    ) -> None:
        super().__init__()
        self.trio = trio
        self.session = session
        self.settings = settings
        if workbench is None:
            workbench = Workbench(trio, session, settings, emit=self._emit)
        else:
            previous = workbench.emit

            def chained(event, _previous=previous):
                _previous(event)
                self._emit(event)

            workbench.emit = chained
        self.workbench = workbench
        self.prompt_id: str | None = None
        self.hint_text: str | None = None  # the hint as last received from the engine
        self.busy = False  # a generation worker is running
        self.models_ready = False
        self.last_error: str | None = None
        self.status_text = ""  # what the status line shows, as plain text
        self._status_style = ""
        self._cancel = threading.Event()
        self._load_lock = threading.Lock()
        self._load_thread: threading.Thread | None = None
        self._load_error: BaseException | None = None
        self._run_started = 0.0
        self.jobs_ended = 0  # generation workers that have returned (tests wait on this)

        path = Path(getattr(session, "path", "") or "")
        self.title = f"overton — {printable(path.name) if path.name else 'session'}"
        self.sub_title = self._family_notice(short=True)

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="Type a prompt and press enter", id="prompt")
        with Horizontal(id="panes"):
            for cond in DEFAULT_PANES:
                spec = getattr(self.trio, CONDITIONS[cond].role)
                yield AnswerPane(cond, spec.name, spec.family, self.settings.samples)
        with Vertical(id="hint-box"):
            yield Label(Text(HINT_LABEL), id="hint-label")
            yield TextArea(id="hint", soft_wrap=True, show_line_numbers=False)
        yield MetricsPanel(id="metrics")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#prompt", Input).focus()
        self.set_interval(self.flush_interval, self._flush)
        self.set_interval(0.5, self._tick)
        self.set_status(self._family_notice(short=False), "yellow" if not self.trio.same_family else "")
        self._start_loading()

    def _family_notice(self, short: bool) -> str:
        base, aligned = self.trio.base, self.trio.aligned
        if self.trio.same_family:
            return f"{base.name} vs {aligned.name} (same family)" if short else (
                self.trio.note or f"{base.name} and {aligned.name} are the same family."
            )
        if short:
            return f"note: base ({base.family}) and aligned ({aligned.family}) are different model families"
        return self.trio.note or (
            f"Note: base {base.name} ({base.family}) and aligned {aligned.name} ({aligned.family}) "
            "come from different families; differences mix alignment with model family."
        )

    # -- helpers --------------------------------------------------------------------------
    def pane(self, condition: str) -> AnswerPane:
        return self.query_one(f"#pane-{condition}", AnswerPane)

    @property
    def panes(self) -> list[AnswerPane]:
        return list(self.query(AnswerPane))

    def set_status(self, text: str, style: str = "") -> None:
        self.status_text = printable(text)
        self._status_style = style
        self._draw_status()

    def _draw_status(self) -> None:
        line = safe_text(self.status_text, self._status_style)
        if self.busy:  # long steps (restyling, summaries) stream nothing: show that time passes
            line.append(f"   {_elapsed(time.monotonic() - self._run_started)}", style="dim")
        self.query_one("#status", Static).update(line)

    def show_error(self, text: str, kind: str = "") -> None:
        self.last_error = text
        self.set_status(f"{kind + ': ' if kind else ''}{text}", "bold red")
        self.notify(printable(text), title=kind or "error", severity="error", markup=False, timeout=8)

    def _emit(self, event: object) -> None:
        """The workbench's callback; runs in worker threads (post_message is thread-safe)."""
        self.post_message(msg.wrap(event))

    def _flush(self) -> None:
        for pane in self.panes:
            pane.flush()

    def _tick(self) -> None:
        for pane in self.panes:
            pane.tick()
        if self.busy:
            self._draw_status()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "cancel":
            return self.busy  # hidden (and escape passes on) when nothing runs
        if action == "regenerate_hinted":
            return None if self.busy else True  # shown dimmed while a generation runs
        return True

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.refresh_bindings()

    # -- loading --------------------------------------------------------------------------
    def _load_pending(self) -> bool:
        t = self._load_thread
        return t is not None and t.is_alive()

    def _ensure_loaded(self, should_stop) -> None:
        """Block (in a worker thread) until every model is loaded; raise the loading error.

        Loading runs in a daemon thread, started once (again after a failure); the caller
        polls ``should_stop`` so that escape or quitting never waits for a slow load.
        """
        with self._load_lock:
            if not self.models_ready and (self._load_thread is None or not self._load_thread.is_alive()):
                if self._load_thread is None or self._load_error is not None:
                    self._load_error = None
                    self._load_thread = threading.Thread(target=self._load_body, name="overton-load", daemon=True)
                    self._load_thread.start()
            thread = self._load_thread
        while thread is not None and thread.is_alive():
            thread.join(0.1)
            if should_stop():
                raise _Stopped()
        if self._load_error is not None:
            raise self._load_error

    def _load_body(self) -> None:
        try:
            self.workbench.load()
        except BaseException as exc:  # shown to the user by whoever waits
            self._load_error = exc
        else:
            self.models_ready = True
            self.post_message(msg.ModelsLoaded())

    def _start_loading(self) -> None:
        self._loader()

    @work(thread=True, group="load", exit_on_error=False)
    def _loader(self) -> None:
        worker = get_current_worker()
        try:
            self._ensure_loaded(lambda: worker.is_cancelled)
        except _Stopped:
            return
        except Exception as exc:
            if not self.busy:  # a waiting generation reports the same error itself
                self.post_message(msg.JobFailed("load", type(exc).__name__, str(exc)))

    # -- generation -----------------------------------------------------------------------
    def _start_run(self, prompt_id: str, hint: str | None, conditions: tuple[str, ...]) -> None:
        self._cancel.clear()
        self._set_busy(True)
        self._run_started = time.monotonic()
        self._runner(prompt_id, hint, conditions)

    @work(thread=True, group="run", exit_on_error=False)
    def _runner(self, prompt_id: str, hint: str | None, conditions: tuple[str, ...]) -> None:
        worker = get_current_worker()
        job = "regenerate" if conditions == ("hinted",) else "run"
        try:
            self._ensure_loaded(lambda: worker.is_cancelled or self._cancel.is_set())
            self.workbench.run(prompt_id, cancel=self._cancel, hint=hint, conditions=conditions)
        except _Stopped:
            pass
        except Exception as exc:
            self.post_message(msg.JobFailed(job, type(exc).__name__, str(exc)))
            try:  # show whatever was generated before the error
                if self.models_ready:
                    self.workbench.update_metrics(prompt_id)
            except Exception:
                pass
        finally:
            self.post_message(msg.JobEnded(job, prompt_id))

    # -- user input -----------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "prompt":
            return
        event.stop()
        self.submit_prompt(event.value)

    def submit_prompt(self, text: str) -> str | None:
        """Store the prompt and start all three panes; returns the prompt id (None if refused)."""
        if self.busy:
            self.notify("A generation is running; press escape to cancel it first.", severity="warning", markup=False)
            return None
        try:
            prompt_id = self.workbench.add_prompt(text)
        except Exception as exc:  # EmptyPrompt, SessionError, sqlite errors
            self.show_error(str(exc), type(exc).__name__)
            return None
        self.last_error = None
        self.prompt_id = prompt_id
        self.hint_text = None
        self.query_one("#hint", TextArea).load_text("")
        self.query_one("#hint-label", Label).update(Text(HINT_LABEL))
        self.query_one(MetricsPanel).clear()
        for pane in self.panes:
            note = "waiting for the hint (summary of aligned sample 0)" if pane.condition == "hinted" else "waiting…"
            pane.reset(self.settings.samples, note)
        self.set_status("starting…" if self.models_ready else "waiting for the models to load…")
        self._start_run(prompt_id, None, DEFAULT_PANES)
        return prompt_id

    def action_regenerate_hinted(self) -> None:
        if self.prompt_id is None:
            self.set_status("Submit a prompt first; the hinted pane needs a hint about its aligned answer.", "yellow")
            return
        if self.busy:
            self.notify("A generation is running; press escape to cancel it first.", severity="warning", markup=False)
            return
        text = self.query_one("#hint", TextArea).text.strip()
        if not text:
            self.set_status(
                "The hint is empty: type one (2-3 sentences about the answer), then press ctrl+r.", "yellow"
            )
            return
        # An unchanged hint is reused as stored; an edited one is recorded as the user's.
        hint = None if (self.hint_text is not None and text == printable(self.hint_text).strip()) else text
        self.last_error = None
        self.pane("hinted").reset(self.settings.samples, "regenerating with the hint…")
        self._start_run(self.prompt_id, hint, ("hinted",))

    def action_cancel(self) -> None:
        if self.busy:
            self._cancel.set()
            self.set_status("cancelling…", "yellow")

    def action_focus_prompt(self) -> None:
        self.query_one("#prompt", Input).focus()

    def action_focus_hint(self) -> None:
        self.query_one("#hint", TextArea).focus()

    async def action_quit(self) -> None:
        self._cancel.set()  # the running generation stops at its next token
        self.exit()

    def on_unmount(self) -> None:
        self._cancel.set()

    # -- engine messages ------------------------------------------------------------------
    def _current(self, prompt_id: str) -> bool:
        return prompt_id == self.prompt_id

    def on_model_progress(self, message: msg.ModelProgress) -> None:
        e = message.event
        frac = f" ({e.fraction:.0%})" if e.fraction is not None else ""
        self.set_status(f"{e.role} model: {e.message}{frac}")

    def on_notice(self, message: msg.Notice) -> None:
        text = getattr(message.event, "message", str(message.event))
        self.set_status(text, "yellow")
        self.notify(printable(text), severity="warning", markup=False, timeout=8)

    def on_engine_message(self, message: msg.EngineMessage) -> None:
        """An engine event this app does not know (a newer engine): say what it was."""
        self.set_status(str(message.event))

    def on_models_loaded(self, message: msg.ModelsLoaded) -> None:
        self.refresh_bindings()
        if not self.busy:
            note = "" if self.trio.same_family else f" ({self._family_notice(short=True)})"
            self.set_status(f"models ready — type a prompt and press enter{note}", "green")

    def on_generation_started(self, message: msg.GenerationStarted) -> None:
        e = message.event
        if not self._current(e.prompt_id):
            return
        n = self.settings.samples
        if e.condition == "summary":
            self.set_status(f"aligned model ({e.model_name}) writing the hint: a summary of aligned sample 0…")
            return
        self.set_status(f"generating {e.condition} sample {e.sample_index + 1}/{n}…")
        if e.condition in DEFAULT_PANES:
            self.pane(e.condition).start(e.sample_index, e.model_name)

    def on_text_delta(self, message: msg.TextDelta) -> None:
        e = message.event
        if self._current(e.prompt_id) and e.condition in DEFAULT_PANES:
            self.pane(e.condition).add_text(e.sample_index, e.text)

    def on_generation_done(self, message: msg.GenerationDone) -> None:
        e = message.event
        if self._current(e.prompt_id) and e.condition in DEFAULT_PANES:
            self.pane(e.condition).done(
                e.sample_index, e.text, e.finish_reason, e.words, e.completion_tokens, e.duration_s
            )

    def on_hint_ready(self, message: msg.HintReady) -> None:
        e = message.event
        if not self._current(e.prompt_id):
            return
        previous, self.hint_text = self.hint_text, e.text
        area = self.query_one("#hint", TextArea)
        typed = area.text.strip()
        if typed and typed != printable(previous or "").strip() and typed != printable(e.text).strip():
            # The user typed a hint while this one was being written: keep theirs.
            self.notify("A hint arrived from the engine; your edit was kept (ctrl+r uses it).", markup=False)
        elif typed != printable(e.text).strip():
            area.load_text(printable(e.text))
        hinted = self.pane("hinted")
        if not hinted.samples:
            hinted.set_note("hint ready; building the prompt…")
        label = Text(HINT_LABEL)
        label.append(f"   source: {printable(e.source)}", style="dim")
        self.query_one("#hint-label", Label).update(label)

    def on_metrics_ready(self, message: msg.MetricsReady) -> None:
        if self._current(message.event.prompt_id):
            self.query_one(MetricsPanel).show(message.event.metrics)

    def on_run_finished(self, message: msg.RunFinished) -> None:
        e = message.event
        if not self._current(e.prompt_id):
            return
        self._flush()
        took = time.monotonic() - self._run_started
        if not e.cancelled:
            self.set_status(f"done in {took:.1f}s — results saved in the session", "green")
        elif self._cancel.is_set():
            self.set_status("cancelled — the partial answer is saved with finish reason 'cancelled'", "yellow")
        else:
            # The engine stops without a cancel when the aligned model's summary came out empty.
            hinted = self.pane("hinted")
            if not hinted.samples:
                hinted.set_note("not generated: no hint")
            self.set_status(
                "stopped: the hinted pane had no hint (the aligned model's summary was empty). "
                "Type a hint and press ctrl+r.", "yellow",
            )

    def on_job_failed(self, message: msg.JobFailed) -> None:
        self.show_error(message.text, message.kind)

    def on_job_ended(self, message: msg.JobEnded) -> None:
        self.jobs_ended += 1
        self._flush()
        self._set_busy(False)
        self._draw_status()
        if self._cancel.is_set() and self.last_error is None:
            self.set_status("cancelled — the partial answer is saved with finish reason 'cancelled'", "yellow")
        for pane in self.panes:
            if pane.note.startswith(("waiting", "regenerating")) and not pane.samples:
                pane.set_note("not generated")


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_app(trio: Trio, session, settings: GenerationSettings) -> None:
    """Run the app in this terminal until the user quits."""
    OvertonApp(trio, session, settings).run()

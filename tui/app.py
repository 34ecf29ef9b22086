"""The workbench app: three answer panes (base | aligned | hinted by default, each switchable to
any condition of the method and stepping through its samples), the editable hint, metrics for
every condition of the prompt, a settings line and a status line.

Keys (all shown in the footer; none is a bare letter, so typing in the prompt or hint is never
taken, except the annotation keys, which act only while an answer pane has focus): ctrl+n / ctrl+p switch the active pane to the next / previous condition, ctrl+g
generates the active pane's condition, alt+← / alt+→ step through its samples (← → when the
pane has focus), ctrl+o focuses the active pane and then the next one (the active pane is the
focused one, or the last focused; tab and a click focus panes too), ctrl+↑ / ctrl+↓ set N,
the samples per condition of the next run (deferred while a generation runs); enter in the
prompt box generates the conditions the panes show; ctrl+r regenerates the hinted condition
with the (edited) hint; escape cancels. Annotation (``tui.annotate``), with a pane focused:
1..5 rate the answer shown (0 removes the rating), l labels, n note, p the prompt's best pane;
ctrl+z undoes the last annotation change. Other screens (``tui.screens``): ctrl+s sessions and
history, ctrl+f search, f2 statistics and export.

The samples of each condition of the current prompt are kept in a ``ConditionState`` (filled
from engine events, or from the session when a pane switches to a condition generated earlier);
a pane is a view on one of them.

Threads: models load and generations run in Textual thread workers. The workbench reports
through its ``emit`` callback (in the worker thread); each event is posted to the app as a
message (``tui.messages``), and streamed text is buffered per condition and drawn on a timer,
so the screen is redrawn a few times a second rather than once per token.

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
from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Input, Label, Static, TextArea
from textual.worker import get_current_worker

from engine import events as ev
from engine.conditions import CONDITIONS, DEFAULT_PANES
from engine.models import Trio
from engine.sanitize import printable
from engine.settings import GenerationSettings
from engine.workbench import NoPool, Workbench
from tui import messages as msg
from tui.annotate import ANNOTATION_BINDINGS, RATING_ACTIONS, AnnotationActions
from tui.errors import user_message
from tui.panes import NOT_SAVED, AnswerPane, ConditionState, MetricsPanel, condition_label, safe_text
from tui.screens import SCREEN_BINDINGS, ScreenActions

HINT_LABEL = "Hint (summary of aligned sample 0) — edit and press ctrl+r to regenerate the hinted pane"
FLUSH_INTERVAL = 0.05  # seconds between redraws of streamed text
MAX_SAMPLES = 50
NOT_GENERATED = "not generated yet — press ctrl+g to generate"
NO_PROMPT = "no prompt yet — type one and press enter"


class _Stopped(Exception):
    """The worker was cancelled (escape or quit) while it waited for the models."""


class OvertonApp(AnnotationActions, ScreenActions, App):
    """Prompt in, answers of any condition out, with a hint you can edit and metrics per prompt."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    flush_interval = FLUSH_INTERVAL  # seconds; streamed text is drawn at most this often
    TITLE = "overton"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS = [
        # In footer order; the most used first, so that an 80-column footer shows them.
        # The annotation keys show only while an answer pane has focus: then they come first.
        *ANNOTATION_BINDINGS,
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+g", "generate_pane", "Generate pane"),
        Binding("ctrl+n", "switch_condition(1)", "Condition", key_display="^n/^p"),
        Binding("ctrl+p", "switch_condition(-1)", "Previous condition", show=False),
        Binding("alt+right", "step_sample(1)", "Sample", key_display="alt+←/→"),
        Binding("alt+left", "step_sample(-1)", "Previous sample", show=False),
        Binding("ctrl+up", "change_samples(1)", "N samples", key_display="^↑/↓"),
        Binding("ctrl+down", "change_samples(-1)", "Fewer samples", show=False),
        Binding("alt+up", "change_samples(1)", "More samples", show=False),
        Binding("alt+down", "change_samples(-1)", "Fewer samples", show=False),
        Binding("ctrl+o", "next_pane", "Pane"),
        # alt+digit reaches the app only in some terminals (tmux sends ESC 1, read as another key)
        Binding("alt+1", "focus_pane(0)", "Pane 1", show=False),
        Binding("alt+2", "focus_pane(1)", "Pane 2", show=False),
        Binding("alt+3", "focus_pane(2)", "Pane 3", show=False),
        Binding("ctrl+r", "regenerate_hinted", "Regenerate hinted"),
        Binding("ctrl+l", "focus_prompt", "Prompt"),
        Binding("ctrl+t", "focus_hint", "Edit hint"),
        *SCREEN_BINDINGS,
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        trio: Trio,
        session,
        settings: GenerationSettings,
        workbench: Workbench | None = None,
        annotator: str | None = None,
        sessions_dir: Path | None = None,
    ) -> None:
        """``annotator``: the name stored with annotations (default: the login name);
        ``sessions_dir``: the folder the sessions screen lists (default: the session's folder)."""
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
        self.states: dict[str, ConditionState] = {}  # per condition, for self._states_prompt
        self._states_prompt: str | None = None
        self.active_slot = 0  # the pane that ctrl+n/p, ctrl+g and alt+←/→ act on
        self.samples_next: int | None = None  # N chosen while a generation ran: for the next run
        self._failures: list[str] = []  # conditions of the running job that could not be generated
        self._job_conditions: tuple[str, ...] = ()
        self._cancel = threading.Event()
        self._load_lock = threading.Lock()
        self._load_thread: threading.Thread | None = None
        self._load_error: BaseException | None = None
        self._run_started = 0.0
        self.jobs_ended = 0  # generation workers that have returned (tests wait on this)
        self.annotator = annotator
        self.sessions_dir = Path(sessions_dir) if sessions_dir is not None else Path(session.path).parent
        self.setup_annotations(annotator)

        path = Path(getattr(session, "path", "") or "")
        self.title = f"overton — {printable(path.name) if path.name else 'session'}"
        self.sub_title = self._family_notice(short=True)

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="Type a prompt and press enter", id="prompt")
        with Horizontal(id="panes"):
            for slot, cond in enumerate(DEFAULT_PANES):
                spec = self._spec(cond)
                pane = AnswerPane(cond, spec.name, spec.family, self.samples, slot=slot)
                pane.state = self.state(cond)
                yield pane
        with Vertical(id="hint-box"):
            yield Label(Text(HINT_LABEL), id="hint-label")
            yield TextArea(id="hint", soft_wrap=True, show_line_numbers=False)
        yield MetricsPanel(id="metrics")
        yield Static(id="settings")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#prompt", Input).focus()
        self.screen.set_class(self.size.height < self.SHORT_HEIGHT, "-short")
        self._mark_active()
        self.set_interval(self.flush_interval, self._flush_text)
        self.set_interval(0.5, self._tick)
        self._draw_settings()
        self.set_status(self._family_notice(short=False), "yellow" if self.trio.different_families else "")
        # A continued session opens on its latest prompt, so earlier work is visible at once.
        earlier = self.session.prompts()
        if earlier:
            self.open_prompt(earlier[-1]["id"])
            self.notify(f"continuing {printable(self.session.path.name)}: {len(earlier)} prompt"
                        f"{'s' if len(earlier) != 1 else ''}; showing the latest — ctrl+s lists them all",
                        markup=False, timeout=6)
        self._start_loading()

    SHORT_HEIGHT = 34  # rows; below it the hint box and the metrics panel shrink

    def on_resize(self, event: events.Resize) -> None:
        self.screen.set_class(event.size.height < self.SHORT_HEIGHT, "-short")

    def _family_notice(self, short: bool) -> str:
        return self.trio.family_notice(short)

    # -- helpers --------------------------------------------------------------------------
    @property
    def samples(self) -> int:
        """N, the samples per condition the next generation makes."""
        return self.workbench.settings.samples

    def _spec(self, condition: str):
        return getattr(self.trio, CONDITIONS[condition].role)

    def pane(self, condition: str) -> AnswerPane:
        """The first pane showing ``condition``."""
        for pane in self.panes:
            if pane.condition == condition:
                return pane
        raise LookupError(f"no pane shows {condition!r}")

    @property
    def panes(self) -> list[AnswerPane]:
        return sorted(self.query(AnswerPane), key=lambda p: p.slot)

    @property
    def active_pane(self) -> AnswerPane:
        panes = self.panes
        return panes[min(self.active_slot, len(panes) - 1)]

    @property
    def pane_conditions(self) -> tuple[str, ...]:
        """The conditions the panes show, each once, in pane order."""
        return tuple(dict.fromkeys(p.condition for p in self.panes))

    def _panes_showing(self, condition: str) -> list[AnswerPane]:
        return [p for p in self.panes if p.condition == condition]

    def state(self, condition: str) -> ConditionState:
        """The samples of ``condition`` for the current prompt; loaded from the session the
        first time they are asked for (the newest batch, cancelled answers included)."""
        self._sync_prompt()
        st = self.states.get(condition)
        if st is None:
            st = self.states[condition] = ConditionState(condition, self.samples)
            self._load_stored(st)
        return st

    def _sync_prompt(self) -> None:
        """On a new current prompt, forget the old one's states and point the panes at new ones."""
        if self._states_prompt == self.prompt_id:
            return
        self._states_prompt = self.prompt_id
        self.states.clear()
        for pane in self.panes:
            spec = self._spec(pane.condition)
            pane.show(self.state(pane.condition), spec.name, spec.family)

    def _load_stored(self, st: ConditionState) -> None:
        if self.prompt_id is None:
            st.note = NO_PROMPT
            return
        try:
            batch = self.session.latest_batches(self.prompt_id, include_cancelled=True).get(
                (self.prompt_id, st.condition))
            if batch:
                rows = {r["id"]: r for r in self.session.generations(self.prompt_id, st.condition)}
                st.load([rows.get(r["id"], r) for r in batch.values()])
                return
        except Exception as exc:  # a damaged or locked session: say so, keep going
            self.show_error(str(exc), type(exc).__name__)
        st.note = NOT_GENERATED

    def _redraw(self, condition: str) -> None:
        for pane in self._panes_showing(condition):
            pane.redraw()

    def set_status(self, text: str, style: str = "") -> None:
        self.status_text = printable(text)
        self._status_style = style
        self._draw_status()

    def _draw_status(self) -> None:
        line = safe_text(self.status_text, self._status_style)
        if self.busy:  # long steps (restyling, summaries) stream nothing: show that time passes
            line.append(f"   {_elapsed(time.monotonic() - self._run_started)}", style="dim")
        self.query_one("#status", Static).update(line)

    def _draw_settings(self) -> None:
        s = self.workbench.settings
        line = Text()
        line.append(f"samples: {s.samples}", style="bold")
        if self.samples_next is not None and self.samples_next != s.samples:
            line.append(f" → {self.samples_next} from the next run", style="yellow")
        line.append(" per condition (ctrl+↑/↓)", style="dim")
        temp = "greedy" if s.greedy else f"temperature {s.temperature:g}"
        line.append(f" · {temp} · max new tokens {s.max_new_tokens} · seed {s.seed} · panes: ")
        line.append(" | ".join(p.condition for p in self.panes))
        self.query_one("#settings", Static).update(line)

    def show_error(self, text: str, kind: str = "") -> None:
        # ``kind`` (an exception's class name) is for logs, not for the user: the text says it all.
        self.last_error = text
        self.set_status(text, "bold red")
        self.notify(printable(text), title="error", severity="error", markup=False, timeout=8)

    def _explain(self, exc: BaseException) -> str:
        """The message for a failure: plain words for SQLite and chat-template errors."""
        return user_message(exc, getattr(self.session, "path", None)) or str(exc)

    def _emit(self, event: object) -> None:
        """The workbench's callback; runs in worker threads (post_message is thread-safe)."""
        self.post_message(msg.wrap(event))

    def _flush_text(self) -> None:
        for cond, st in list(self.states.items()):
            if st.flush():
                for pane in self._panes_showing(cond):
                    pane.flushes += 1
                    pane.redraw()

    def _tick(self) -> None:
        for pane in self.panes:
            pane.tick()
        if self.busy:
            self._draw_status()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if len(self.screen_stack) > 1 and action in MAIN_SCREEN_ACTIONS:
            return False  # another screen or a dialog is on top: the main screen's keys are off
        if action in RATING_ACTIONS or action == "undo_annotation":
            return self.annotation_allowed(action)
        if action == "cancel":
            return self.busy  # hidden (and escape passes on) when nothing runs
        if action in ("regenerate_hinted", "generate_pane"):
            return None if self.busy else True  # shown dimmed while a generation runs
        return True

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.refresh_bindings()

    # -- loading --------------------------------------------------------------------------
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
                self.post_message(msg.JobFailed("load", type(exc).__name__, self._explain(exc)))

    # -- generation -----------------------------------------------------------------------
    def _start_run(self, prompt_id: str, hint: str | None, conditions: tuple[str, ...], job: str) -> None:
        self._cancel.clear()
        self._failures = []
        self._job_conditions = tuple(dict.fromkeys(conditions))
        self._set_busy(True)
        self._run_started = time.monotonic()
        self._runner(prompt_id, hint, tuple(dict.fromkeys(conditions)), job)

    @work(thread=True, group="run", exit_on_error=False)
    def _runner(self, prompt_id: str, hint: str | None, conditions: tuple[str, ...], job: str) -> None:
        worker = get_current_worker()
        try:
            self._ensure_loaded(lambda: worker.is_cancelled or self._cancel.is_set())
            self._generate(prompt_id, hint, conditions)
        except _Stopped:
            pass
        except Exception as exc:
            self.post_message(msg.JobFailed(job, type(exc).__name__, self._explain(exc)))
            try:  # show whatever was generated before the error
                if self.models_ready:
                    self.workbench.update_metrics(prompt_id)
            except Exception:
                pass
        finally:
            self.post_message(msg.JobEnded(job, prompt_id))

    def _generate(self, prompt_id: str, hint: str | None, conditions: tuple[str, ...]) -> bool:
        """``Workbench.run`` for ``conditions``, except that a condition that cannot be made
        (NoPool: icl-random / icl-knn without other prompts' aligned answers) is reported and
        the others still run. Runs in the worker thread; False when cancelled or stopped."""
        wb = self.workbench
        # The hint summarises aligned sample 0, so hinted conditions come last (as Workbench.run).
        order = sorted(conditions, key=lambda c: (CONDITIONS[c].needs_hint, conditions.index(c)))
        finished = True
        for name in order:
            if self._cancel.is_set():
                finished = False
                break
            try:
                ok = wb.run_condition(prompt_id, name, self._cancel, hint=hint)
            except NoPool as exc:
                self.post_message(msg.ConditionFailed(prompt_id, name, type(exc).__name__, str(exc)))
                continue
            if not ok:
                finished = False
                break
        wb.update_metrics(prompt_id)
        wb.emit(ev.RunFinished(prompt_id, cancelled=not finished))
        return finished

    def _refuse_while_busy(self) -> bool:
        if self.busy:
            self.notify("A generation is running; press escape to cancel it first.", severity="warning", markup=False)
        return self.busy

    def _edited_hint(self) -> str | None:
        """The hint box's text when the user changed it (recorded as theirs), else None (the
        stored hint is reused, or the aligned model writes one)."""
        text = self.query_one("#hint", TextArea).text.strip()
        if not text or (self.hint_text is not None and text == printable(self.hint_text).strip()):
            return None
        return text

    def _prepare(self, conditions, note_for=None) -> None:
        """Empty the states of ``conditions`` for a new batch of N samples, with a waiting note."""
        for cond in dict.fromkeys(conditions):
            note = note_for(cond) if note_for else None
            if note is None and CONDITIONS[cond].needs_hint:
                note = "waiting for the hint (summary of aligned sample 0)"
            elif note is None:
                note = "waiting…"
            self.state(cond).reset(self.samples, note)
            for pane in self._panes_showing(cond):
                pane.view = None
                pane.redraw(to_top=True)

    # -- user input -----------------------------------------------------------------------
    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "prompt":
            return
        event.stop()
        self.submit_prompt(event.value)

    def submit_prompt(self, text: str) -> str | None:
        """Store the prompt and generate the conditions the panes show; returns the prompt id
        (None if refused)."""
        if self._refuse_while_busy():
            return None
        try:
            current = self.session.prompt(self.prompt_id) if self.prompt_id else None
            if current is not None and text.strip() and current["text"] == text.strip():
                prompt_id = self.prompt_id  # the same prompt again: a new batch of it, not a second prompt
            else:
                prompt_id = self.workbench.add_prompt(text)
        except Exception as exc:  # EmptyPrompt, SessionError, sqlite errors
            self.show_error(self._explain(exc), type(exc).__name__)
            return None
        self.last_error = None
        self.prompt_id = prompt_id
        self.hint_text = None
        self.query_one("#hint", TextArea).load_text("")
        self.query_one("#hint-label", Label).update(Text(HINT_LABEL))
        self.query_one(MetricsPanel).clear()
        conditions = self.pane_conditions
        self._prepare(conditions)
        self.set_status("starting…" if self.models_ready else "waiting for the models to load…")
        self._start_run(prompt_id, None, conditions, "run")
        return prompt_id

    def open_prompt(self, prompt_id: str) -> None:
        """Make a stored prompt the current one: panes show its stored samples, the hint box its
        latest hint, the metrics panel its figures (embedding figures from stored vectors)."""
        if self._refuse_while_busy():
            return
        from engine import prompt_metrics

        row = self.session.prompt(prompt_id)
        self.prompt_id = prompt_id
        self._sync_prompt()
        box = self.query_one("#prompt", Input)
        box.value = printable(row["text"])
        box.select_all()  # typing replaces the shown prompt instead of appending to it
        hint = self.session.latest_hint(prompt_id)
        self.hint_text = hint["text"] if hint else None
        self.query_one("#hint", TextArea).load_text(printable(self.hint_text or ""))
        label = Text(HINT_LABEL)
        if hint:
            label.append(f"   source: {printable(hint['source'])}", style="dim")
        self.query_one("#hint-label", Label).update(label)
        panel = self.query_one(MetricsPanel)
        panel.clear()
        samples = self.workbench.latest_samples(prompt_id)
        if samples:
            texts = [t for ts in samples.values() for t in ts]
            vectors = self.session.embeddings_for(self.trio.embedder.id, texts) or None
            panel.show(prompt_metrics.compute(samples, vectors))
        self._draw_settings()
        self.set_status(f"prompt {printable(row.get('external_id') or prompt_id)}: "
                        f"{', '.join(samples) or 'nothing generated yet'}")
        self.refresh_annotations()

    def clear_prompt(self) -> None:
        """No current prompt (after switching sessions): empty panes, hint, metrics and prompt box."""
        self.prompt_id = None
        self.hint_text = None
        self._sync_prompt()
        for st in self.states.values():
            st.note = NO_PROMPT
        for pane in self.panes:
            pane.redraw(to_top=True)
        self.query_one("#prompt", Input).value = ""
        self.query_one("#hint", TextArea).load_text("")
        self.query_one("#hint-label", Label).update(Text(HINT_LABEL))
        self.query_one(MetricsPanel).clear()
        self._draw_settings()

    def show_answer(self, condition: str, sample_index: int, generation_id: str | None = None) -> bool:
        """Show one stored answer of the current prompt: in a pane already showing its condition,
        else in the active pane switched to it. False when the sample is not in the newest batch."""
        if condition not in CONDITIONS:
            self.set_status(f"{condition!r} is not a condition the panes can show", "yellow")
            return False
        showing = self._panes_showing(condition)
        pane = showing[0] if showing else self.active_pane
        if not showing:
            self.show_condition(pane, condition)
        st = self.state(condition)
        index = sample_index
        if generation_id is not None:  # the row decides, when it is in the batch
            index = next((i for i, s in st.samples.items() if s.generation_id == generation_id), sample_index)
        if not pane.show_sample(index):
            self.set_status(f"{condition} sample {sample_index + 1} is not in the newest batch of this prompt",
                            "yellow")
            return False
        self.active_slot = pane.slot
        self._mark_active()
        return True

    def action_generate_pane(self) -> None:
        """Generate N samples of the active pane's condition for the current prompt."""
        pane = self.active_pane
        if self.prompt_id is None:
            self.set_status("Type a prompt and press enter first; ctrl+g then generates the active pane's "
                            "condition for it.", "yellow")
            return
        if self._refuse_while_busy():
            return
        cond = pane.condition
        hint = self._edited_hint() if CONDITIONS[cond].needs_hint else None
        self.last_error = None
        self._prepare((cond,), lambda c: None if CONDITIONS[c].needs_hint else "generating…")
        self.set_status(f"generating {cond} ({self.samples} sample{'s' if self.samples != 1 else ''})…")
        self._start_run(self.prompt_id, hint, (cond,), "generate")

    def action_regenerate_hinted(self) -> None:
        if self.prompt_id is None:
            self.set_status("Submit a prompt first; the hinted pane needs a hint about its aligned answer.", "yellow")
            return
        if self._refuse_while_busy():
            return
        text = self.query_one("#hint", TextArea).text.strip()
        if not text:
            self.set_status(
                "The hint is empty: type one (2-3 sentences about the answer), then press ctrl+r.", "yellow"
            )
            return
        self.last_error = None
        self._prepare(("hinted",), lambda c: "regenerating with the hint…")
        if "hinted" not in self.pane_conditions:
            self.notify("No pane shows the hinted condition; switch one to it with ctrl+n to watch.", markup=False)
        self._start_run(self.prompt_id, self._edited_hint(), ("hinted",), "regenerate")

    def action_switch_condition(self, step: int) -> None:
        """Show the next / previous condition of the method in the active pane."""
        pane = self.active_pane
        names = list(CONDITIONS)
        at = names.index(pane.condition) if pane.condition in names else -1
        self.show_condition(pane, names[(at + step) % len(names)])

    def show_condition(self, pane: AnswerPane, condition: str) -> None:
        """Point ``pane`` at ``condition``: its stored or streaming samples for the prompt."""
        spec = self._spec(condition)
        st = self.state(condition)
        pane.show(st, spec.name, spec.family)
        self._draw_settings()
        what = f"pane {pane.slot + 1}: {condition} — {condition_label(condition)}"
        if st.samples:
            self.set_status(f"{what} ({len(st.samples)} sample{'s' if len(st.samples) != 1 else ''}; "
                            "alt+←/→ steps through them)")
        elif self.prompt_id is None:
            self.set_status(f"{what}; enter in the prompt box generates it")
        elif st.note == NOT_GENERATED:
            self.set_status(f"{what}: not generated for this prompt yet — press ctrl+g to generate it", "yellow")
        else:
            self.set_status(f"{what}: {st.note}")

    def action_step_sample(self, delta: int) -> None:
        pane = self.active_pane
        if not pane.step(delta):
            n = len(pane.samples)
            where = "no samples yet" if not n else ("the first sample" if delta < 0 else f"the last of {n} samples")
            self.set_status(f"pane {pane.slot + 1} ({pane.condition}): {where}", "yellow")

    def action_change_samples(self, delta: int) -> None:
        current = self.samples_next if self.samples_next is not None else self.samples
        n = max(1, min(MAX_SAMPLES, current + delta))
        if self.busy:
            self.samples_next = n  # never changed under a running generation
        else:
            self.set_samples(n)
        self._draw_settings()

    def set_samples(self, n: int) -> None:
        """N samples per condition for the next generation."""
        self.workbench.settings = self.workbench.settings.with_(samples=n)
        self.settings = self.workbench.settings
        self.samples_next = None
        self._draw_settings()

    def action_next_pane(self) -> None:
        """Focus the active pane, or from a pane the next one (it becomes the active pane)."""
        panes = self.panes
        focused = self.focused
        slot = (focused.slot + 1) % len(panes) if isinstance(focused, AnswerPane) else self.active_slot
        panes[slot].focus()

    def action_focus_pane(self, slot: int) -> None:
        panes = self.panes
        if 0 <= slot < len(panes):
            panes[slot].focus()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        widget = event.widget
        if isinstance(widget, AnswerPane) and widget.slot != self.active_slot:
            self.active_slot = widget.slot
            self._mark_active()

    def _mark_active(self) -> None:
        for pane in self.panes:
            pane.set_active(pane.slot == self.active_slot)

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
            note = f" ({self._family_notice(short=True)})" if self.trio.different_families else ""
            self.set_status(f"models ready — type a prompt and press enter{note}", "green")

    def on_generation_started(self, message: msg.GenerationStarted) -> None:
        e = message.event
        if not self._current(e.prompt_id):
            return
        if e.condition == "summary":
            self.set_status(f"aligned model ({e.model_name}) writing the hint: a summary of aligned sample 0…")
            return
        st = self.state(e.condition)
        if e.sample_index == 0:  # sample 0 starts a new batch
            st.reset(self.samples)
        st.start(e.sample_index, e.model_name)
        first = min(st.running)
        which = f"sample {first + 1}" if first == e.sample_index else f"samples {first + 1}–{e.sample_index + 1}"
        self.set_status(f"generating {e.condition} {which}/{st.count}…")
        if first == e.sample_index:  # the samples of a batch stream together: follow the first
            for pane in self._panes_showing(e.condition):
                pane.follow(e.sample_index)

    def on_text_delta(self, message: msg.TextDelta) -> None:
        e = message.event
        if self._current(e.prompt_id) and e.condition != "summary":
            self.state(e.condition).add_text(e.sample_index, e.text)

    def on_generation_done(self, message: msg.GenerationDone) -> None:
        e = message.event
        if self._current(e.prompt_id) and e.condition != "summary":
            self.state(e.condition).done(
                e.sample_index, e.text, e.finish_reason, e.words, e.completion_tokens, e.duration_s,
                e.generation_id,
            )
            self._redraw(e.condition)

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
        for cond, st in self.states.items():
            if CONDITIONS.get(cond) is not None and CONDITIONS[cond].needs_hint and not st.samples:
                st.note = "hint ready; building the prompt…"
                self._redraw(cond)
        label = Text(HINT_LABEL)
        label.append(f"   source: {printable(e.source)}", style="dim")
        self.query_one("#hint-label", Label).update(label)

    def on_metrics_ready(self, message: msg.MetricsReady) -> None:
        if self._current(message.event.prompt_id):
            self.query_one(MetricsPanel).show(message.event.metrics)

    def on_condition_failed(self, message: msg.ConditionFailed) -> None:
        if not self._current(message.prompt_id):
            return
        st = self.state(message.condition)
        st.note = f"not generated — {message.kind}: {message.text}"
        self._redraw(message.condition)
        self._failures.append(f"{message.condition} ({message.kind}: {message.text})")
        self.show_error(message.text, f"{message.kind} ({message.condition})")

    def on_run_finished(self, message: msg.RunFinished) -> None:
        e = message.event
        if not self._current(e.prompt_id):
            return
        self._flush_text()
        took = time.monotonic() - self._run_started
        if not e.cancelled:
            if self._failures:
                failed = "not generated: " + "; ".join(self._failures)
                if len(self._failures) < len(self._job_conditions):
                    failed = f"done in {took:.1f}s; {failed}"
                self.set_status(failed, "bold red")
            else:
                self.set_status(f"done in {took:.1f}s — results saved in the session", "green")
        elif self._cancel.is_set():
            self.set_status("cancelled — the partial answer is saved with finish reason 'cancelled'", "yellow")
        else:
            # The engine stops without a cancel when the aligned model's summary came out empty.
            for cond, st in self.states.items():
                if CONDITIONS.get(cond) is not None and CONDITIONS[cond].needs_hint and not st.samples:
                    st.note = "not generated: no hint"
                    self._redraw(cond)
            self.set_status(
                "stopped: the hinted pane had no hint (the aligned model's summary was empty). "
                "Type a hint and press ctrl+r.", "yellow",
            )

    def on_job_failed(self, message: msg.JobFailed) -> None:
        self.show_error(message.text, message.kind)

    def on_job_ended(self, message: msg.JobEnded) -> None:
        self.jobs_ended += 1
        self._flush_text()
        for cond, st in self.states.items():
            # Streamed, but the job failed before the answer was stored (a full disk...): keep
            # it on screen, marked as not saved.
            unsaved = [s for s in st.samples.values() if s.finish_reason is None]
            for sample in unsaved:
                sample.finish_reason = NOT_SAVED
            if unsaved:
                self._redraw(cond)
        self._set_busy(False)
        if self.samples_next is not None:
            self.set_samples(self.samples_next)
        self._draw_status()
        if self._cancel.is_set() and self.last_error is None:
            self.set_status("cancelled — the partial answer is saved with finish reason 'cancelled'", "yellow")
        for cond, st in self.states.items():
            if st.samples and st.expected != len(st.samples):
                # N counts the batch as made (a cancel, or the one aligned sample a hint needs).
                st.expected = len(st.samples)
                self._redraw(cond)
            changed = st.stop_all()  # samples that never reported back (an error)
            if st.note.startswith(("waiting", "regenerating", "generating", "hint ready")) and not st.samples:
                st.note = "not generated (cancelled) — press ctrl+g" if self._cancel.is_set() else "not generated"
                changed = True
            if changed:
                self._redraw(cond)


# the actions of the main screen's keys (not quit, nor app actions other screens bind, such as
# focus_next for tab)
MAIN_SCREEN_ACTIONS = frozenset(b.action.split("(")[0] for b in OvertonApp.BINDINGS) - {"quit"}


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_app(trio: Trio, session, settings: GenerationSettings, annotator: str | None = None,
            sessions_dir: Path | None = None):
    """Run the app in this terminal until the user quits; returns the session open at the end
    (another one when the user switched sessions: the caller closes it)."""
    app = OvertonApp(trio, session, settings, annotator=annotator, sessions_dir=sessions_dir)
    app.run()
    return app.session

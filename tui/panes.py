"""Widgets of the app: answer panes (each showing one condition, one sample at a time) and the
metrics panel.

The samples of a condition live in a :class:`ConditionState`, kept by the app per condition of
the current prompt (filled from engine events while generating, or from the session when a pane
switches to a condition generated earlier). An :class:`AnswerPane` is a view on one state: any
condition, any of its samples; two panes may show the same condition (e.g. two samples side by
side).

Every piece of model or user text goes on screen as a ``rich.text.Text`` built from
``safe_text`` (control characters made visible), never as markup, so ``[bold]`` or an escape
sequence in an answer is shown exactly as the model wrote it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from engine.conditions import CONDITIONS, REFERENCE
from engine.metrics import word_count
from engine.sanitize import printable


NOT_SAVED = "not saved"  # a pane's answer whose store failed (finish reason shown in its title)


def safe_text(text: str, style: str = "") -> Text:
    """A Text showing ``text`` literally: no markup, control characters as visible symbols."""
    return Text(printable(text or ""), style=style, no_wrap=False)


def condition_label(condition: str) -> str:
    return CONDITIONS[condition].label if condition in CONDITIONS else condition


@dataclass
class SampleState:
    text: str = ""
    deltas: int = 0  # text pieces received (about one per token while streaming)
    started: float = field(default_factory=time.monotonic)
    finish_reason: str | None = None
    words: int | None = None
    tokens: int | None = None
    duration_s: float | None = None
    model_name: str | None = None
    generation_id: str | None = None  # the session row, once stored

    @classmethod
    def from_row(cls, row: dict) -> SampleState:
        """A finished sample as stored in the session's ``generations`` table."""
        text = row.get("text") or ""
        return cls(text=text, finish_reason=row.get("finish_reason") or "stored", words=word_count(text),
                   tokens=row.get("completion_tokens"), duration_s=row.get("duration_s"),
                   model_name=row.get("model_name"), generation_id=row.get("id"))


class ConditionState:
    """The newest batch of one condition for the current prompt, as the app knows it."""

    def __init__(self, condition: str, expected: int = 1, note: str = "") -> None:
        self.condition = condition
        self.samples: dict[int, SampleState] = {}
        self.pending: dict[int, list[str]] = {}  # streamed text not yet on screen, per sample
        self.expected = expected  # samples in the batch (being) generated
        self.running: set[int] = set()  # samples being generated (a batch decodes together)
        self.note = note  # shown when there is no sample, e.g. "waiting for the hint"
        self.model_name: str | None = None

    @property
    def generating(self) -> int | None:
        """The first sample still being generated, if any."""
        return min(self.running) if self.running else None

    def stop_all(self) -> bool:
        """Forget samples that never reported back; True if there were any."""
        had = bool(self.running)
        self.running.clear()
        return had

    @property
    def count(self) -> int:
        """N in "sample i/N"."""
        return max(self.expected, len(self.samples), 1)

    def reset(self, expected: int, note: str = "") -> None:
        self.samples.clear()
        self.pending.clear()
        self.expected = expected
        self.running.clear()
        self.note = note

    def load(self, rows: list[dict]) -> None:
        """The stored rows of a batch, in sample order."""
        self.reset(len(rows))
        for row in rows:
            self.samples[row["sample_index"]] = SampleState.from_row(row)
            self.model_name = row.get("model_name") or self.model_name

    def start(self, index: int, model_name: str) -> None:
        self.model_name = model_name
        self.samples[index] = SampleState(model_name=model_name)
        self.running.add(index)
        self.note = ""

    def add_text(self, index: int, text: str) -> None:
        """Buffer streamed text; it reaches the samples at the next :meth:`flush`."""
        self.samples.setdefault(index, SampleState(model_name=self.model_name)).deltas += 1
        self.pending.setdefault(index, []).append(text)

    def flush(self) -> bool:
        """Move buffered text into the samples; False when nothing was pending."""
        if not self.pending:
            return False
        for index, parts in self.pending.items():
            self.samples.setdefault(index, SampleState(model_name=self.model_name)).text += "".join(parts)
        self.pending.clear()
        return True

    def done(self, index: int, text: str, finish_reason: str, words: int, tokens: int, duration_s: float,
             generation_id: str | None = None) -> None:
        self.pending.pop(index, None)
        state = self.samples.setdefault(index, SampleState(model_name=self.model_name))
        state.generation_id = generation_id
        # The stored answer (stop text cut, stripped) replaces what was streamed.
        state.text = text
        state.finish_reason, state.words, state.tokens, state.duration_s = finish_reason, words, tokens, duration_s
        self.running.discard(index)


class _TextScroll(VerticalScroll, can_focus=False):
    """The pane's text; the pane itself takes focus (and the arrow keys)."""


class AnswerPane(Vertical, can_focus=True):
    """A view on one condition: a title row (label, model, sample i/N, live figures) and the
    text of one sample. Focus it (ctrl+o, tab, click) to step through samples with ← →."""

    DEFAULT_CLASSES = "answer-pane"
    BINDINGS = [
        Binding("left", "step(-1)", "Prev sample", show=False),
        Binding("right", "step(1)", "Sample", key_display="← →"),
        Binding("up", "scroll_text('up')", "Scroll", show=False),
        Binding("down", "scroll_text('down')", "Scroll", show=False),
        Binding("pageup", "scroll_text('page_up')", "Page up", show=False),
        Binding("pagedown", "scroll_text('page_down')", "Page down", show=False),
        Binding("home", "scroll_text('home')", "Top", show=False),
        Binding("end", "scroll_text('end')", "Bottom", show=False),
    ]

    def __init__(self, condition: str, model_name: str = "", family: str = "", samples: int = 1,
                 slot: int = 0, **kw) -> None:
        super().__init__(id=f"pane-{slot}", **kw)
        self.slot = slot
        self.condition = condition
        self.model_name = model_name  # the trio's model for the condition's role
        self.family = family
        self.state = ConditionState(condition, samples)
        self.view: int | None = None  # the sample shown
        self.renders = 0  # how many times the answer text was redrawn
        self.flushes = 0  # of which redraws of streamed text (at most one per timer tick)
        self._set_border_title()

    def compose(self) -> ComposeResult:
        yield Static(self._title_text(), classes="pane-title")
        with _TextScroll(classes="pane-scroll"):
            yield Static(Text(""), classes="pane-text")

    @property
    def title_widget(self) -> Static:
        return self.query_one(".pane-title", Static)

    @property
    def text_widget(self) -> Static:
        return self.query_one(".pane-text", Static)

    # -- what tests and the app read --------------------------------------------------------
    @property
    def label(self) -> str:
        return condition_label(self.condition)

    @property
    def samples(self) -> dict[int, SampleState]:
        return self.state.samples

    @property
    def current(self) -> int | None:
        """The index of the sample shown (None when there is none)."""
        if self.view is not None and self.view in self.state.samples:
            return self.view
        return min(self.state.samples) if self.state.samples else None

    @property
    def note(self) -> str:
        return self.state.note

    @property
    def visible_text(self) -> str:
        """The answer text as shown (after sanitising), for tests and copy-out."""
        return self._body_text().plain

    # -- state changes (called by the app on the UI thread) -------------------------------
    def show(self, state: ConditionState, model_name: str, family: str) -> None:
        """Switch to another condition (or a fresh state of the same one)."""
        changed = state.condition != self.condition
        self.condition = state.condition
        self.state = state
        self.model_name, self.family = model_name, family
        if state.generating is not None:
            self.view = state.generating
        else:
            self.view = min(state.samples) if state.samples else None
        self._set_border_title()
        self.redraw(to_top=changed)

    def follow(self, index: int) -> None:
        """Show the sample that is being generated."""
        self.view = index
        self.redraw(to_top=True)

    def show_sample(self, index: int) -> bool:
        """Show sample ``index``; False when the condition has no such sample."""
        if index not in self.state.samples:
            return False
        self.view = index
        self.redraw(to_top=True)
        return True

    def step(self, delta: int) -> bool:
        """Show the previous / next stored sample; False at either end."""
        indexes = sorted(self.state.samples)
        if not indexes:
            return False
        at = self.current
        pos = indexes.index(at) if at in indexes else 0
        new = pos + delta
        if not 0 <= new < len(indexes):
            return False
        self.view = indexes[new]
        self.redraw(to_top=True)
        return True

    def set_note(self, note: str) -> None:
        self.state.note = note
        self.redraw()

    def action_step(self, delta: int) -> None:
        if not self.step(delta) and len(self.state.samples) > 1:
            self.app.bell()  # already at the first / last sample

    def action_scroll_text(self, how: str) -> None:
        scroll = self.query_one(".pane-scroll", VerticalScroll)
        {"up": scroll.scroll_up, "down": scroll.scroll_down, "page_up": scroll.scroll_page_up,
         "page_down": scroll.scroll_page_down, "home": scroll.scroll_home, "end": scroll.scroll_end}[how](
            animate=False)

    def set_active(self, active: bool) -> None:
        self.set_class(active, "-active")
        self.border_subtitle = Text("ctrl+n/p condition · ctrl+g generate · alt+←/→ sample") if active else ""

    # -- rendering -----------------------------------------------------------------------
    def _set_border_title(self) -> None:
        self.border_title = Text(f"{self.slot + 1}: {self.condition}")

    def _title_text(self) -> Text:
        title = Text()
        title.append(printable(self.label), style="bold")
        title.append(" · ")
        index = self.current
        state = self.state.samples.get(index) if index is not None else None
        model = (state.model_name if state is not None else None) or self.state.model_name or self.model_name
        title.append(printable(model or "?"))
        if self.family and model == self.model_name:
            title.append(f" ({printable(self.family)})", style="dim")
        title.append("\n")
        if state is not None:
            title.append(f"sample {index + 1}/{self.state.count}", style="cyan")
            if state.finish_reason is None:
                words = len(state.text.split())
                elapsed = max(time.monotonic() - state.started, 1e-6)
                title.append(f" · {_words(words)} · ~{state.deltas / elapsed:.1f} tok/s · ")
                title.append("generating…", style="italic")
            else:
                rate = f"{state.tokens / state.duration_s:.1f}" if state.tokens and state.duration_s else "—"
                style = "bold red" if state.finish_reason in ("cancelled", NOT_SAVED) else "green"
                title.append(f" · {_words(state.words)} · {rate} tok/s · ")
                title.append(printable(state.finish_reason), style=style)
            gen = self.state.generating
            if gen is not None and gen != index:
                title.append(f" (generating sample {gen + 1})", style="italic dim")
        elif self.state.note:
            title.append(printable(self.state.note), style="dim italic")
        badge = self._badge(index, state)
        if badge.plain:
            title.append("\n")
            title.append_text(badge)
        return title

    def _badge(self, index: int | None, state: SampleState | None) -> Text:
        """The annotations of the answer shown (the app's ``badge_for``; tui.annotate)."""
        try:
            badge_for = getattr(self.app, "badge_for", None)
        except Exception:  # noqa: BLE001 - no app yet
            return Text()
        return badge_for(self.condition, index, state) if badge_for is not None else Text()

    def _body_text(self) -> Text:
        index = self.current
        if index is None:
            return Text("")
        return safe_text(self.state.samples[index].text)

    def redraw(self, to_top: bool = False) -> None:
        if not self.is_mounted:
            return
        self.title_widget.update(self._title_text())
        scroll = self.query_one(".pane-scroll", VerticalScroll)
        follow = not to_top and scroll.scroll_y >= scroll.max_scroll_y - 1
        self.text_widget.update(self._body_text())
        self.renders += 1
        if to_top:
            scroll.scroll_home(animate=False)
        elif follow:
            scroll.call_after_refresh(scroll.scroll_end, animate=False)

    def tick(self) -> None:
        """Refresh the live figures of a running sample (rate changes with time)."""
        index = self.current
        state = self.state.samples.get(index) if index is not None else None
        if state is not None and state.finish_reason is None and self.is_mounted:
            self.title_widget.update(self._title_text())


def _words(n: int | None) -> str:
    return "1 word" if n == 1 else f"{n} words"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


FLAG_NAMES = {"abstain": "abstains", "numbered_list": "numbered", "bullet_list": "bullets"}


class MetricsPanel(Horizontal):
    """Per-condition figures against aligned sample 0 (every condition of the prompt),
    information aggregation, and the sample-0 similarity matrix."""

    COLUMNS = ("condition", "n", "words", "Jaccard→al s0", "coverage", "cosine→al s0", "diversity", "flags")
    AGG_COLUMNS = ("condition", "in al s0", "in 1 other", "in ∪ others")

    def compose(self) -> ComposeResult:
        table = DataTable(id="metrics-table", cursor_type="none", zebra_stripes=True)
        table.border_title = "vs aligned sample 0 (aligned row: the ceiling, s0 vs s1..)"
        yield table
        agg = DataTable(id="aggregation-table", cursor_type="none", zebra_stripes=True)
        agg.border_title = "information aggregation"
        agg.border_subtitle = "share of a sample's words found in…"
        yield agg
        matrix = DataTable(id="matrix-table", cursor_type="none")
        matrix.border_title = "s0 × s0: Jaccard/cosine"
        yield matrix

    def on_mount(self) -> None:
        self.query_one("#metrics-table", DataTable).add_columns(*self.COLUMNS)
        self.query_one("#aggregation-table", DataTable).add_columns(*self.AGG_COLUMNS)

    def clear(self) -> None:
        self.query_one("#metrics-table", DataTable).clear()
        self.query_one("#aggregation-table", DataTable).clear()
        self.query_one("#matrix-table", DataTable).clear(columns=True)

    def show(self, metrics) -> None:
        """Fill the tables from an ``engine.prompt_metrics.PromptMetrics``."""
        table = self.query_one("#metrics-table", DataTable)
        table.clear()
        order = [c for c in CONDITIONS if c in metrics.conditions] + [
            c for c in metrics.conditions if c not in CONDITIONS
        ]
        for c in order:
            f = metrics.figures[c]
            flags = ", ".join(
                f"{FLAG_NAMES.get(k, k)} {share:.0%}" for k, share in f.flags.items() if share
            ) or "—"
            label = c + (" (ceiling)" if c == REFERENCE else "")
            table.add_row(
                Text(label), Text(str(f.samples)), Text(f"{f.words:.0f}"), Text(_fmt(f.similarity)),
                Text(_fmt(f.coverage)), Text(_fmt(f.embedding)), Text(_fmt(f.diversity)), Text(flags),
                key=c,
            )
        agg = self.query_one("#aggregation-table", DataTable)
        agg.clear()
        aggregation = getattr(metrics, "aggregation", {}) or {}
        for c in order:
            a = aggregation.get(c)
            if a is not None:
                agg.add_row(Text(c), Text(_fmt(a.in_reference)), Text(_fmt(a.in_one_other)),
                            Text(_fmt(a.in_union_others)), key=c)
        if not agg.row_count:
            agg.add_row(Text("needs ≥2 samples"), Text(""), Text(""), Text(""), key="")
        matrix = self.query_one("#matrix-table", DataTable)
        matrix.clear(columns=True)
        matrix.add_columns("s0", *order)
        for a in order:
            cells = []
            for b in order:
                j = metrics.jaccard_s0.get((a, b))
                cos = metrics.cosine_s0.get((a, b))
                cells.append(Text(f"{_fmt(j, 2)}/{_fmt(cos, 2)}"))
            matrix.add_row(Text(a), *cells, key=a)

    def rows(self) -> dict[str, list[str]]:
        """The metrics table as plain strings, keyed by condition (for tests)."""
        return _table_rows(self.query_one("#metrics-table", DataTable))

    def aggregation(self) -> dict[str, list[str]]:
        """The aggregation table as plain strings, keyed by condition (for tests)."""
        return {k: v for k, v in _table_rows(self.query_one("#aggregation-table", DataTable)).items() if k}

    def matrix(self) -> dict[str, list[str]]:
        return _table_rows(self.query_one("#matrix-table", DataTable))


def _table_rows(table: DataTable) -> dict[str, list[str]]:
    return {k.value: [str(c) for c in table.get_row(k)] for k in table.rows}

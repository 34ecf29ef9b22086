"""Widgets of the app: an answer pane per condition and the metrics panel.

Every piece of model or user text goes on screen as a ``rich.text.Text`` built from
``safe_text`` (control characters made visible), never as markup, so ``[bold]`` or an escape
sequence in an answer is shown exactly as the model wrote it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from engine.conditions import CONDITIONS, REFERENCE
from engine.sanitize import printable


def safe_text(text: str, style: str = "") -> Text:
    """A Text showing ``text`` literally: no markup, control characters as visible symbols."""
    return Text(printable(text or ""), style=style, no_wrap=False)


@dataclass
class SampleState:
    text: str = ""
    deltas: int = 0  # text pieces received (about one per token while streaming)
    started: float = field(default_factory=time.monotonic)
    finish_reason: str | None = None
    words: int | None = None
    tokens: int | None = None
    duration_s: float | None = None


class AnswerPane(Vertical):
    """One condition: a title row (label, model, live figures) and the streamed answer."""

    DEFAULT_CLASSES = "answer-pane"

    def __init__(self, condition: str, model_name: str = "", family: str = "", samples: int = 1, **kw) -> None:
        super().__init__(id=f"pane-{condition}", **kw)
        self.condition = condition
        self.label = CONDITIONS[condition].label if condition in CONDITIONS else condition
        self.model_name = model_name
        self.family = family
        self.samples_expected = samples
        self.samples: dict[int, SampleState] = {}
        self.current: int | None = None
        self.pending: dict[int, list[str]] = {}  # text not yet on screen, per sample
        self.renders = 0  # how many times the answer text was redrawn
        self.flushes = 0  # of which redraws of streamed text (at most one per timer tick)
        self.note: str = ""  # e.g. "waiting for the hint"
        self.border_title = Text(self.label)

    def compose(self) -> ComposeResult:
        yield Static(self._title_text(), classes="pane-title")
        with VerticalScroll(classes="pane-scroll"):
            yield Static(Text(""), classes="pane-text")

    @property
    def title_widget(self) -> Static:
        return self.query_one(".pane-title", Static)

    @property
    def text_widget(self) -> Static:
        return self.query_one(".pane-text", Static)

    # -- state changes (called by the app on the UI thread) -------------------------------
    def reset(self, samples: int, note: str = "") -> None:
        self.samples_expected = samples
        self.samples.clear()
        self.pending.clear()
        self.current = None
        self.note = note
        self._redraw()

    def start(self, index: int, model_name: str) -> None:
        self.model_name = model_name
        self.samples[index] = SampleState()
        self.current = index
        self.note = ""
        self._redraw()

    def add_text(self, index: int, text: str) -> None:
        """Buffer streamed text; it reaches the screen at the next :meth:`flush`."""
        state = self.samples.setdefault(index, SampleState())
        state.deltas += 1
        if self.current is None:
            self.current = index
        self.pending.setdefault(index, []).append(text)

    def flush(self) -> bool:
        """Move buffered text into the samples and redraw once; False when nothing was pending."""
        if not self.pending:
            return False
        for index, parts in self.pending.items():
            self.samples.setdefault(index, SampleState()).text += "".join(parts)
        self.pending.clear()
        self.flushes += 1
        self._redraw()
        return True

    def done(self, index: int, text: str, finish_reason: str, words: int, tokens: int, duration_s: float) -> None:
        self.pending.pop(index, None)
        state = self.samples.setdefault(index, SampleState())
        # The stored answer (stop text cut, stripped) replaces what was streamed.
        state.text = text
        state.finish_reason, state.words, state.tokens, state.duration_s = finish_reason, words, tokens, duration_s
        self._redraw()

    def set_note(self, note: str) -> None:
        self.note = note
        self._redraw()

    # -- rendering -----------------------------------------------------------------------
    @property
    def visible_text(self) -> str:
        """The answer text as shown (after sanitising), for tests and copy-out."""
        return self._body_text().plain

    def _title_text(self) -> Text:
        title = Text()
        title.append(printable(self.model_name or "?"), style="bold")
        if self.family:
            title.append(f" ({printable(self.family)})", style="dim")
        title.append("\n")
        state = self.samples.get(self.current) if self.current is not None else None
        if state is not None:
            n = max(self.samples_expected, len(self.samples))
            title.append(f"sample {self.current + 1}/{n}", style="cyan")
            if state.finish_reason is None:
                words = len(state.text.split())
                elapsed = max(time.monotonic() - state.started, 1e-6)
                title.append(f" · {_words(words)} · ~{state.deltas / elapsed:.1f} tok/s · ")
                title.append("generating…", style="italic")
            else:
                rate = state.tokens / state.duration_s if state.duration_s else 0.0
                style = "bold red" if state.finish_reason == "cancelled" else "green"
                title.append(f" · {_words(state.words)} · {rate:.1f} tok/s · ")
                title.append(state.finish_reason, style=style)
        elif self.note:
            title.append(printable(self.note), style="dim italic")
        return title

    def _body_text(self) -> Text:
        if not self.samples:
            return Text("")
        if len(self.samples) == 1 and self.samples_expected <= 1:
            return safe_text(next(iter(self.samples.values())).text)
        body = Text()
        for i in sorted(self.samples):
            state = self.samples[i]
            if body:
                body.append("\n\n")
            tail = f" ({state.finish_reason})" if state.finish_reason else ""
            body.append(f"── sample {i + 1}{tail} ──\n", style="dim")
            body.append_text(safe_text(state.text))
        return body

    def _redraw(self) -> None:
        if not self.is_mounted:
            return
        self.title_widget.update(self._title_text())
        scroll = self.query_one(".pane-scroll", VerticalScroll)
        follow = scroll.scroll_y >= scroll.max_scroll_y - 1
        self.text_widget.update(self._body_text())
        self.renders += 1
        if follow:
            scroll.call_after_refresh(scroll.scroll_end, animate=False)

    def tick(self) -> None:
        """Refresh the live figures of a running sample (rate changes with time)."""
        state = self.samples.get(self.current) if self.current is not None else None
        if state is not None and state.finish_reason is None and self.is_mounted:
            self.title_widget.update(self._title_text())


def _words(n: int | None) -> str:
    return "1 word" if n == 1 else f"{n} words"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


FLAG_NAMES = {"abstain": "abstains", "numbered_list": "numbered", "bullet_list": "bullets"}


class MetricsPanel(Horizontal):
    """Per-condition figures against aligned sample 0, and the sample-0 similarity matrix."""

    COLUMNS = ("condition", "n", "words", "Jaccard→al s0", "coverage", "cosine→al s0", "diversity", "flags")

    def compose(self) -> ComposeResult:
        table = DataTable(id="metrics-table", cursor_type="none", zebra_stripes=True)
        table.border_title = "metrics vs aligned sample 0 (aligned row: ceiling, s0 vs s1..)"
        yield table
        matrix = DataTable(id="matrix-table", cursor_type="none")
        matrix.border_title = "sample 0 × sample 0: Jaccard / cosine"
        yield matrix

    def on_mount(self) -> None:
        self.query_one("#metrics-table", DataTable).add_columns(*self.COLUMNS)

    def clear(self) -> None:
        self.query_one("#metrics-table", DataTable).clear()
        self.query_one("#matrix-table", DataTable).clear(columns=True)

    def show(self, metrics) -> None:
        """Fill both tables from an ``engine.prompt_metrics.PromptMetrics``."""
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
        matrix = self.query_one("#matrix-table", DataTable)
        matrix.clear(columns=True)
        matrix.add_columns("s0", *order)
        for a in order:
            cells = []
            for b in order:
                j = metrics.jaccard_s0.get((a, b))
                cos = metrics.cosine_s0.get((a, b))
                cells.append(Text(f"{_fmt(j, 2)} / {_fmt(cos, 2)}"))
            matrix.add_row(Text(a), *cells, key=a)

    def rows(self) -> dict[str, list[str]]:
        """The metrics table as plain strings, keyed by condition (for tests)."""
        table = self.query_one("#metrics-table", DataTable)
        out = {}
        for row_key in table.rows:
            out[row_key.value] = [str(cell) for cell in table.get_row(row_key)]
        return out

    def matrix(self) -> dict[str, list[str]]:
        table = self.query_one("#matrix-table", DataTable)
        return {k.value: [str(c) for c in table.get_row(k)] for k in table.rows}

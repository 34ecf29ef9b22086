"""The statistics screen: ``engine.stats`` over the whole current session (the table that
``overton stats`` prints, with the annotation counts), and plots in the terminal made of block
characters: per condition, the distribution of each answer's similarity to the reference's
sample 0, of each prompt's diversity, of answer length, and of the ratings.

Everything is computed in a thread worker (thousands of answers take seconds); ``r`` recomputes,
``e`` opens the export dialog, escape goes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from engine import metrics as m
from engine.conditions import REFERENCE
from engine.sanitize import printable
from engine.stats import Stats, StatsError, compute_stats
from tui.screens.common import fmt, hbar, histogram, pct, spark

BINS = 20
NAME_WIDTH = 16
STATS_COLUMNS = ("condition", "prompts", "samples", "words", "divers.", "sim.", "cov.", "emb.", "gap",
                 "abstain", "numbered", "bullets", "ratings", "mean ★", "notes", "♥ best", "labels")


@dataclass
class StatsData:
    """What the screen shows: the statistics and, per condition, the values the plots bin."""

    stats: Stats
    similarity: dict[str, list[float]] = field(default_factory=dict)  # per answer, vs reference s0
    diversity: dict[str, list[float]] = field(default_factory=dict)  # per prompt (>= 2 samples)
    words: dict[str, list[int]] = field(default_factory=dict)  # per answer


def collect(session, embedding_model: str | None = None) -> StatsData:
    """``compute_stats`` (reference: aligned, when the session has it) plus the per-answer and
    per-prompt values behind its means, over the same answers (each newest batch, not cancelled)."""
    stats = compute_stats(session, embedding_model=embedding_model, require_reference=False)
    data = StatsData(stats)
    ref = stats.reference
    per: dict[str, dict[str, dict[int, str]]] = {}
    for (pid, cond), rows in session.latest_batches().items():
        per.setdefault(cond, {})[pid] = {i: r["text"] or "" for i, r in rows.items()}
    refs = {pid: batch[0] for pid, batch in per.get(ref, {}).items() if 0 in batch}
    for cond, prompts in per.items():
        sims, divs, words = [], [], []
        for pid, batch in prompts.items():
            texts = list(batch.values())
            words.extend(m.word_count(t) for t in texts)
            if len(texts) >= 2:
                d = m.mean_pairwise_jaccard(texts)
                if d is not None:
                    divs.append(d)
            if pid in refs:
                for i, t in batch.items():
                    if cond == ref and i == 0:
                        continue  # the reference itself
                    j = m.jaccard(t, refs[pid])
                    if j is not None:
                        sims.append(j)
        data.similarity[cond], data.diversity[cond], data.words[cond] = sims, divs, words
    return data


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def plot_section(title: str, series: dict[str, list[float]], order: list[str], lo: float, hi: float,
                 digits: int = 3, unit: str = "") -> Text:
    """A titled block: per condition a histogram line (``BINS`` cells over [lo, hi]), the count,
    the mean and a bar of the mean (relative to the largest mean)."""
    out = Text()
    out.append(title + "\n", style="bold")
    lo_label, hi_label = f"{lo:g}", f"{hi:g}{unit}"
    axis = lo_label + " " * max(1, BINS - len(lo_label) - len(hi_label)) + hi_label
    out.append(" " * (NAME_WIDTH + 1) + axis + "\n", style="dim")
    means = {c: _mean(series.get(c, [])) for c in order}
    top = max((v for v in means.values() if v is not None), default=0.0)
    for cond in order:
        values = series.get(cond, [])
        name = printable(cond)[:NAME_WIDTH]
        out.append(f"{name:<{NAME_WIDTH}} ")
        if not values:
            out.append("(no values)".ljust(BINS), style="dim")
            out.append("\n")
            continue
        out.append(spark(histogram(values, lo, hi, BINS)), style="cyan")
        mean = means[cond]
        out.append(f"  n={len(values):<5} mean {fmt(mean, digits):>7}  ")
        out.append(hbar(mean, top, 20), style="green")
        out.append("\n")
    return out


def ratings_section(stats: Stats, order: list[str]) -> Text:
    out = Text()
    out.append("ratings per condition (every annotator's rating; bars: share of 1 … 5)\n", style="bold")
    out.append(" " * (NAME_WIDTH + 1) + "1 2 3 4 5\n", style="dim")
    for cond in order:
        row = stats.row(cond)
        counts = list(row.rating_counts) if row else [0] * 5
        out.append(f"{printable(cond)[:NAME_WIDTH]:<{NAME_WIDTH}} ")
        if not sum(counts):
            out.append("(no ratings)\n", style="dim")
            continue
        out.append(" ".join(spark(counts)), style="yellow")
        out.append(f"  n={sum(counts):<5} mean {fmt(row.mean_rating, 2):>7}  ")
        out.append(" ".join(f"{i + 1}:{c}" for i, c in enumerate(counts)), style="dim")
        out.append("\n")
    return out


def render_plots(data: StatsData) -> Text:
    stats = data.stats
    order = [r.condition for r in stats.rows]
    ref = stats.reference
    longest = max((max(v) for v in data.words.values() if v), default=0)
    hi_words = max(10, -(-longest // 10) * 10)  # rounded up to tens
    parts = [
        plot_section(f"similarity to {ref} sample 0 (Jaccard, one value per answer; {ref}: samples 1.. = the "
                     "ceiling)", data.similarity, order, 0.0, 1.0),
        plot_section("diversity (mean pairwise Jaccard of a prompt's samples, one value per prompt with ≥ 2; "
                     "higher = less diverse)", data.diversity, order, 0.0, 1.0),
        plot_section("length (words per answer)", {c: [float(w) for w in v] for c, v in data.words.items()},
                     order, 0.0, float(hi_words), digits=0),
        ratings_section(stats, order),
    ]
    out = Text()
    for i, part in enumerate(parts):
        if i:
            out.append("\n")
        out.append_text(part)
    return out


def table_row(r) -> list[Text]:
    """A stats row as the screen shows it (the same formats as ``overton stats``)."""
    name = Text(printable(r.condition), style="bold" if r.is_base or r.is_reference else "")
    if r.is_reference:
        name.append("*")
    labels = ", ".join(f"{printable(k)} {v}" for k, v in r.label_counts.items()) or "–"
    cells = [str(r.prompts), str(r.samples), fmt(r.mean_words, 0), fmt(r.diversity), fmt(r.similarity),
             fmt(r.coverage), fmt(r.embedding_similarity), fmt(r.gap_closed), pct(r.abstain_rate),
             pct(r.numbered_list_rate), pct(r.bullet_list_rate), str(r.ratings), fmt(r.mean_rating, 2),
             str(r.notes), str(r.preference_wins), labels]
    return [name, *(Text(c) for c in cells)]


class StatsScreen(Screen):
    """Per-condition statistics and plots of the current session."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("r", "refresh_stats", "Recompute"),
        Binding("e", "export", "Export"),
    ]

    DEFAULT_CSS = """
    StatsScreen #stats-title { height: auto; padding: 0 1; background: $boost; }
    StatsScreen #stats-table { height: auto; max-height: 14; border: round $secondary; }
    StatsScreen #stats-notes { height: auto; padding: 0 1; color: $text-muted; }
    StatsScreen #plots { height: 1fr; border: round $secondary; padding: 0 1; }
    StatsScreen #stats-status { height: auto; max-height: 3; padding: 0 1; background: $boost; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.data: StatsData | None = None
        self.status_text = ""
        self.computed = 0  # finished computations (tests wait on this)

    def compose(self) -> ComposeResult:
        yield Static(id="stats-title")
        table = DataTable(id="stats-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static(id="stats-notes")
        with VerticalScroll(id="plots"):
            yield Static(id="plots-body")
        yield Static(id="stats-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#stats-table", DataTable).add_columns(*STATS_COLUMNS)
        self.query_one("#stats-title", Static).update(
            Text(f"Statistics of {printable(self.app.session.path.name)}", style="bold"))
        self.action_refresh_stats()

    def set_status(self, text: str, style: str = "") -> None:
        self.status_text = printable(text)
        self.query_one("#stats-status", Static).update(Text(self.status_text, style=style))

    def action_refresh_stats(self) -> None:
        self.set_status("computing the statistics of every prompt in the session…")
        self.query_one("#plots", VerticalScroll).loading = True
        session = self.app.session
        embedder = getattr(getattr(getattr(self.app, "trio", None), "embedder", None), "id", None)
        self.compute(session, embedder)

    @work(thread=True, exclusive=True, group="stats", exit_on_error=False)
    def compute(self, session, embedder: str | None) -> None:
        try:
            stored = session.embedding_models()
            data, error = collect(session, embedder if embedder in stored else None), None
        except (StatsError, Exception) as exc:  # noqa: BLE001 - a damaged or closed session
            data, error = None, f"{type(exc).__name__}: {exc}"
        try:
            self.app.call_from_thread(self._show, data, error)
        except RuntimeError:
            pass  # the app is closing

    def _show(self, data: StatsData | None, error: str | None) -> None:
        if not self.is_mounted:
            return
        self.query_one("#plots", VerticalScroll).loading = False
        self.computed += 1
        if error is not None or data is None:
            self.set_status(f"cannot compute the statistics: {error}", "bold red")
            return
        self.data = data
        stats = data.stats
        title = Text(f"Statistics of {printable(self.app.session.path.name)}", style="bold")
        title.append(f" · {stats.prompts} prompts · reference: {printable(stats.reference)} sample 0"
                     + (f" · base: {printable(stats.base)}" if stats.base else ""))
        self.query_one("#stats-title", Static).update(title)
        table = self.query_one("#stats-table", DataTable)
        table.clear()
        for r in stats.rows:
            table.add_row(*table_row(r), key=r.condition)
        notes = [f"* {stats.reference}, the reference: samples 1..n-1 against its sample 0 (the ceiling). "
                 "divers.: mean pairwise Jaccard within a prompt (higher = less diverse); sim./cov./emb.: Jaccard, "
                 f"coverage, embedding cosine against {stats.reference} sample 0; gap: (sim − sim(base)) ÷ "
                 "(ceiling − sim(base))."]
        if stats.annotators:
            p = stats.preferences or {}
            notes.append(f"annotators: {', '.join(printable(a) for a in stats.annotators)} · preferences: "
                         f"{p.get('preferences', 0)} on {p.get('prompts', 0)} prompts, tie {p.get('tie', 0)}, "
                         f"all bad {p.get('all-bad', 0)}")
            a = stats.agreement or {}
            if len(stats.annotators) >= 2 and a:
                r = a["ratings"]
                notes.append(f"agreement: ratings exact {pct(r['exact'])}, within one {pct(r['within_one'])} "
                             f"({r['pairs']} pairs); labels same set {pct(a['labels']['exact'])}; preferences "
                             f"same {pct(a['preferences']['exact'])}")
        if not stats.rows:
            notes = ["no answers in this session yet: generate some on the main screen"]
        elif stats.row(stats.reference) is None:
            notes.insert(0, f"no {stats.reference} answers: similarity and coverage need its sample 0")
        self.query_one("#stats-notes", Static).update(Text("\n".join(notes)))
        self.query_one("#plots-body", Static).update(render_plots(data) if stats.rows else Text(""))
        self.set_status("r recomputes · e exports · escape goes back", "dim")

    def rows(self) -> dict[str, list[str]]:
        """The table as plain strings keyed by condition (for tests)."""
        table = self.query_one("#stats-table", DataTable)
        return {k.value: [str(c) for c in table.get_row(k)] for k in table.rows}

    def action_export(self) -> None:
        from tui.screens.export import ExportDialog

        self.app.push_screen(ExportDialog())

    def action_back(self) -> None:
        self.app.pop_screen()


__all__ = ["StatsScreen", "StatsData", "collect", "render_plots", "REFERENCE"]

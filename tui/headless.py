"""``overton run``: the main job without the app, printed with rich."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine import events as ev
from engine.conditions import CONDITIONS
from engine.sanitize import printable


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def metrics_table(metrics) -> Table:
    table = Table(title="similarity to the aligned model's sample 0", title_justify="left")
    for col in ("condition", "samples", "words", "Jaccard", "coverage", "embedding cos", "diversity",
                "abstain", "numbered", "bullets"):
        table.add_column(col, justify="left" if col == "condition" else "right")
    for name in metrics.conditions:
        f = metrics.figures[name]
        sim = _fmt(f.similarity) + (" (ceiling)" if name == "aligned" and f.similarity is not None else "")
        table.add_row(name, str(f.samples), f"{f.words:.0f}", sim, _fmt(f.coverage), _fmt(f.embedding),
                      _fmt(f.diversity), *(f"{f.flags[k]:.0%}" for k in ("abstain", "numbered_list", "bullet_list")))
    return table


def matrix_table(metrics) -> Table:
    table = Table(title="sample 0 vs sample 0: Jaccard / embedding cosine", title_justify="left")
    table.add_column("")
    for name in metrics.conditions:
        table.add_column(name, justify="right")
    for a in metrics.conditions:
        table.add_row(a, *(f"{_fmt(metrics.jaccard_s0[(a, b)])} / {_fmt(metrics.cosine_s0[(a, b)])}"
                           for b in metrics.conditions))
    return table


class _Printer:
    """Turns workbench events into terminal output as they arrive."""

    def __init__(self, console: Console, trio, samples: int):
        self.console = console
        self.trio = trio
        self.samples = samples
        self.metrics = None

    def __call__(self, event) -> None:
        c = self.console
        if isinstance(event, ev.ModelProgress):
            if event.fraction is None or event.fraction in (0.0, 1.0):
                c.print(Text(f"[{event.role}] {event.message}", style="dim"))
        elif isinstance(event, ev.GenerationStarted):
            label = CONDITIONS[event.condition].label if event.condition in CONDITIONS else "hint (summary of aligned sample 0)"
            c.print()
            c.rule(Text(f"{label} · {event.model_name} · sample {event.sample_index + 1}/{self.samples}"),
                   align="left")
        elif isinstance(event, ev.TextDelta):
            c.print(Text(printable(event.text)), end="", soft_wrap=True)
        elif isinstance(event, ev.GenerationDone):
            rate = event.completion_tokens / event.duration_s if event.duration_s else 0
            c.print()
            c.print(Text(f"[{event.finish_reason} · {event.words} words · {event.completion_tokens} tokens · "
                         f"{rate:.1f} tok/s]", style="dim"))
        elif isinstance(event, ev.HintReady):
            c.print(Text(f"hint ({event.source}): ", style="bold") + Text(printable(event.text)))
        elif isinstance(event, ev.MetricsReady):
            self.metrics = event.metrics


def run_prompt(console: Console, trio, session, settings, prompt: str, hint: str | None) -> None:
    from engine.workbench import Workbench

    printer = _Printer(console, trio, settings.samples)
    bench = Workbench(trio, session, settings, emit=printer)
    if not trio.same_family:
        console.print(Text(f"note: base ({trio.base.family}) and aligned ({trio.aligned.family}) models come "
                           "from different families; differences mix alignment with model family.", style="yellow"))
    cancel = threading.Event()
    outcome: dict = {}

    def work():
        try:
            bench.load()
            prompt_id = bench.add_prompt(prompt)
            outcome["prompt_id"] = prompt_id
            outcome["finished"] = bench.run(prompt_id, cancel, hint=hint)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    # Generation runs in a thread so Ctrl-C can cancel it cleanly: the partial answer is kept.
    thread = threading.Thread(target=work, name="overton-run", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        console.print(Text("\ninterrupted: keeping the partial answer…", style="yellow"))
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    console.print()
    if printer.metrics is not None:
        console.print(metrics_table(printer.metrics))
        console.print(matrix_table(printer.metrics))
    status = "complete" if outcome.get("finished") else "interrupted (partial answers kept)"
    console.print(Text(f"session: {session.path} · prompt {outcome.get('prompt_id')} · {status}"))

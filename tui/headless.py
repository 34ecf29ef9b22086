"""``overton run``: the main job without the app, printed with rich."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.table import Table
from rich.text import Text

from engine import events as ev
from engine.conditions import CONDITIONS, DEFAULT_PANES
from engine.sanitize import printable
from tui.formats import fmt as _fmt


ROWS = (
    ("samples", lambda f: str(f.samples)),
    ("mean words", lambda f: f"{f.words:.0f}"),
    ("Jaccard to aligned s0", lambda f: _fmt(f.similarity)),
    ("coverage by aligned s0", lambda f: _fmt(f.coverage)),
    ("embedding cosine to aligned s0", lambda f: _fmt(f.embedding)),
    ("diversity (pairwise Jaccard)", lambda f: _fmt(f.diversity)),
    ("abstains", lambda f: f"{f.flags['abstain']:.0%}"),
    ("numbered list", lambda f: f"{f.flags['numbered_list']:.0%}"),
    ("bullet list", lambda f: f"{f.flags['bullet_list']:.0%}"),
)


def metrics_table(metrics) -> Table:
    """One column per condition: it stays readable in an 80-column terminal."""
    table = Table(title="per condition (aligned: samples 1..n-1 vs sample 0, the ceiling)", title_justify="left")
    table.add_column("metric")
    for name in metrics.conditions:
        table.add_column(name, justify="right")
    for label, cell in ROWS:
        table.add_row(label, *(cell(metrics.figures[c]) for c in metrics.conditions))
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
                c.print(Text(printable(f"[{event.role}] {event.message}"), style="dim"))
        elif isinstance(event, ev.GenerationStarted):
            label = CONDITIONS[event.condition].label if event.condition in CONDITIONS else "hint (summary of aligned sample 0)"
            c.print()
            c.rule(Text(printable(f"{label} · {event.model_name} · sample {event.sample_index + 1}/{self.samples}")),
                   align="left")
        elif isinstance(event, ev.TextDelta):
            c.print(Text(printable(event.text)), end="", soft_wrap=True)
        elif isinstance(event, ev.GenerationDone):
            rate = event.completion_tokens / event.duration_s if event.duration_s else 0
            c.print()
            c.print(Text(f"[{event.finish_reason} · {event.words} words · {event.completion_tokens} tokens · "
                         f"{rate:.1f} tok/s]", style="dim"))
        elif isinstance(event, ev.HintReady) and event.source == "user":
            c.print(Text(f"hint ({event.source}): ", style="bold") + Text(printable(event.text)))
        elif isinstance(event, ev.MetricsReady):
            self.metrics = event.metrics
        elif isinstance(event, ev.Notice):
            c.print(Text(printable(f"note: {event.message}"), style="yellow"))


def _run_interruptible(work, console: Console, name: str) -> dict:
    """Run ``work(cancel, outcome)`` in a thread so Ctrl-C cancels it cleanly.

    Generation stops at the next token and the partial answer is stored as cancelled before
    this returns (the caller closes the session afterwards). An exception in the work is
    raised again here, in the main thread.
    """
    cancel = threading.Event()
    done = threading.Event()  # not Thread.join: a join interrupted by Ctrl-C can report a live thread as dead
    outcome: dict = {}

    def target():
        try:
            work(cancel, outcome)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=name, daemon=True).start()
    while not done.is_set():
        try:
            done.wait(0.2)
        except KeyboardInterrupt:
            if not cancel.is_set():
                cancel.set()
                console.print(Text("\ninterrupted: keeping the partial answer…", style="yellow"))
    if "error" in outcome:
        raise outcome["error"]
    return outcome


def run_prompt(console: Console, trio, session, settings, prompt: str, hint: str | None,
               conditions=DEFAULT_PANES, pool=()) -> bool:
    from engine.workbench import Workbench

    printer = _Printer(console, trio, settings.samples)
    bench = Workbench(trio, session, settings, emit=printer, pool=pool)
    if not trio.same_family:
        console.print(Text(f"note: base ({trio.base.family}) and aligned ({trio.aligned.family}) models come "
                           "from different families; differences mix alignment with model family.", style="yellow"))
    console.print(Text("prompt: ", style="bold") + Text(printable(prompt.strip())))

    def work(cancel, outcome):
        bench.load()
        prompt_id = bench.add_prompt(prompt)
        outcome["prompt_id"] = prompt_id
        outcome["finished"] = bench.run(prompt_id, cancel, hint=hint, conditions=conditions)

    outcome = _run_interruptible(work, console, "overton-run")
    console.print()
    if printer.metrics is not None:
        console.print(metrics_table(printer.metrics))
        console.print(matrix_table(printer.metrics))
    status = "complete" if outcome.get("finished") else "interrupted (partial answers kept)"
    console.print(Text(f"session: {session.path} · prompt {outcome.get('prompt_id')} · {status}"))
    return bool(outcome.get("finished"))


def run_batch(console: Console, trio, session, settings, prompts, conditions, pool=()) -> bool:
    """Every prompt × condition × sample, with a progress bar; resumes what is already done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from engine.workbench import Workbench

    from engine.conditions import CONDITIONS as ALL, REFERENCE

    # Pool conditions draw on the aligned answers of the other prompts, so every prompt's
    # aligned samples are made first (pass 1), then the pool conditions (pass 2).
    pooled = [c for c in conditions if ALL[c].needs_pool]
    first = [c for c in conditions if not ALL[c].needs_pool]
    if pooled and REFERENCE not in first and not pool:
        first.insert(0, REFERENCE)
    passes = [p for p in (first, pooled) if p]
    counted = first + pooled
    total = len(prompts) * len(counted) * settings.samples
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
    task = progress.add_task("generating", total=total)
    state = {"prompt": 0}

    def emit(event) -> None:
        if isinstance(event, ev.GenerationDone) and event.condition in counted:
            progress.advance(task)
        elif isinstance(event, ev.GenerationStarted):
            progress.update(task, description=printable(f"prompt {state['prompt']}/{len(prompts)} · "
                                                        f"{event.condition} sample {event.sample_index + 1}"))
        elif isinstance(event, ev.Notice):
            progress.console.print(Text(printable(f"note: {event.message}"), style="yellow"))
        elif isinstance(event, ev.ModelProgress) and (event.fraction is None or event.fraction in (0.0, 1.0)):
            progress.console.print(Text(printable(f"[{event.role}] {event.message}"), style="dim"))

    bench = Workbench(trio, session, settings, emit=emit, pool=pool)
    def work(cancel, outcome):
        bench.load()
        ids = [bench.add_prompt(line.text, external_id=line.id) for line in prompts]
        for chosen in passes:
            for n, pid in enumerate(ids, 1):
                state["prompt"] = n
                done = sum(len(bench.completed_samples(pid, c) & set(range(settings.samples))) for c in chosen)
                progress.advance(task, done)  # resumed work counts as done
                if not bench.run(pid, cancel, conditions=chosen, resume=True):
                    outcome["finished"] = False
                    return
        outcome["finished"] = True

    with progress:
        outcome = _run_interruptible(work, progress.console, "overton-batch")
    finished = outcome.get("finished", False)
    console.print(Text(f"session: {session.path} · {len(prompts)} prompts · conditions {', '.join(counted)} · "
                       + ("complete" if finished else "interrupted; run the same command again to resume")))
    return finished

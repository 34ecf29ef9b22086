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
    title = "per condition (aligned: samples 1..n-1 vs sample 0, the ceiling)"
    # min_width: rich wraps a title to its table's width, which a few columns keep narrow.
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("metric")
    for name in metrics.conditions:
        table.add_column(name, justify="right")
    for label, cell in ROWS:
        table.add_row(label, *(cell(metrics.figures[c]) for c in metrics.conditions))
    return table


def matrix_table(metrics) -> Table:
    title = "sample 0 vs sample 0: Jaccard / embedding cosine"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("")
    for name in metrics.conditions:
        table.add_column(name, justify="right")
    for a in metrics.conditions:
        table.add_row(a, *(f"{_fmt(metrics.jaccard_s0[(a, b)])} / {_fmt(metrics.cosine_s0[(a, b)])}"
                           for b in metrics.conditions))
    return table


class _Printer:
    """Turns workbench events into terminal output as they arrive.

    The samples of a condition are generated together and their text arrives interleaved;
    one is streamed live, the others are held and printed whole, in order, as their turn comes.
    """

    def __init__(self, console: Console, trio, samples: int):
        self.console = console
        self.trio = trio
        self.samples = samples
        self.metrics = None
        self.live: tuple | None = None  # (condition, sample) being printed as it streams
        self.held: dict[tuple, dict] = {}  # started samples waiting for their turn, in start order

    def __call__(self, event) -> None:
        c = self.console
        if isinstance(event, ev.ModelProgress):
            if event.fraction is None or event.fraction in (0.0, 1.0):
                c.print(Text(printable(f"[{event.role}] {event.message}"), style="dim"))
        elif isinstance(event, ev.GenerationStarted):
            self.held[(event.condition, event.sample_index)] = {"started": event, "text": [], "done": None}
            if self.live is None:
                self._next()
        elif isinstance(event, ev.TextDelta):
            key = (event.condition, event.sample_index)
            if key == self.live:
                c.print(Text(printable(event.text)), end="", soft_wrap=True)
            elif key in self.held:
                self.held[key]["text"].append(event.text)
        elif isinstance(event, ev.GenerationDone):
            key = (event.condition, event.sample_index)
            if key == self.live:
                self._footer(event)
                self.live = None
                self._next()
            elif key in self.held:
                self.held[key]["done"] = event
        elif isinstance(event, ev.HintReady) and event.source == "user":
            c.print(Text(f"hint ({event.source}): ", style="bold") + Text(printable(event.text)))
        elif isinstance(event, ev.MetricsReady):
            self.metrics = event.metrics
        elif isinstance(event, ev.Notice):
            c.print(Text(printable(f"note: {event.message}"), style="yellow"))


    def _header(self, e: ev.GenerationStarted) -> None:
        if e.condition in CONDITIONS:
            title = f"{CONDITIONS[e.condition].label} · {e.model_name} · sample {e.sample_index + 1}/{self.samples}"
        else:
            title = f"hint (summary of aligned sample 0) · {e.model_name}"
        self.console.print()
        self.console.rule(Text(printable(title)), align="left")

    def _footer(self, e: ev.GenerationDone) -> None:
        rate = e.completion_tokens / e.duration_s if e.duration_s else 0
        self.console.print()
        self.console.print(Text(f"[{e.finish_reason} · {e.words} words · {e.completion_tokens} tokens · "
                                f"{rate:.1f} tok/s]", style="dim"))

    def _next(self) -> None:
        """Print held samples in order: finished ones whole, the first unfinished one from what
        it has so far, which then streams live."""
        while self.held:
            key = next(iter(self.held))
            entry = self.held.pop(key)
            self._header(entry["started"])
            done = entry["done"]
            text = done.text if done is not None else "".join(entry["text"])
            self.console.print(Text(printable(text)), end="", soft_wrap=True)
            if done is None:
                self.live = key
                return
            self._footer(done)

    def finish(self) -> None:
        """After an interruption or error: show what was held back."""
        if self.live is not None:
            self.console.print()
            self.live = None
        self._next()
        if self.live is not None:
            self.console.print()
            self.live = None


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
    if trio.different_families:
        console.print(Text(f"note: base ({trio.base.family}) and aligned ({trio.aligned.family}) models come "
                           "from different families; differences mix alignment with model family.", style="yellow"))
    console.print(Text("prompt: ", style="bold") + Text(printable(prompt.strip())))

    def work(cancel, outcome):
        from engine.prompt_file import text_id

        bench.load()
        # Keyed by its text as a prompt-file line is: the same prompt run again (or also in a
        # batch file) is a new batch of one prompt, not a second prompt in the statistics.
        prompt_id = bench.add_prompt(prompt, external_id=text_id(prompt))
        outcome["prompt_id"] = prompt_id
        outcome["finished"] = bench.run(prompt_id, cancel, hint=hint, conditions=conditions)

    try:
        outcome = _run_interruptible(work, console, "overton-run")
    finally:
        printer.finish()  # an error message starts on a line of its own
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
            if event.finish_reason != "cancelled":  # a cancelled answer is redone on resume
                progress.advance(task)
        elif isinstance(event, ev.GenerationStarted):
            progress.update(task, description=printable(f"prompt {state['prompt']}/{len(prompts)} · "
                                                        f"{event.condition} sample {event.sample_index + 1}"))
        elif isinstance(event, ev.Notice):
            progress.console.print(Text(printable(f"note: {event.message}"), style="yellow"))
        elif isinstance(event, ev.ModelProgress) and (event.fraction is None or event.fraction in (0.0, 1.0)):
            progress.console.print(Text(printable(f"[{event.role}] {event.message}"), style="dim"))

    bench = Workbench(trio, session, settings, emit=emit, pool=pool)
    skipped: list[str] = []

    def skip(line, exc) -> None:
        skipped.append(line.id)
        progress.advance(task, len(counted) * settings.samples)
        progress.console.print(Text(printable(f"prompt {line.id!r} (line {line.line}) skipped: {exc}"), style="yellow"))

    def work(cancel, outcome):
        from engine.backend import PromptTooLong
        from engine.workbench import EmptyPrompt

        bench.load()
        ids = {}
        for line in prompts:  # a prompt that cannot run is reported by its id and line; the rest run
            try:
                ids[line] = bench.add_prompt(line.text, external_id=line.id)
            except (PromptTooLong, EmptyPrompt) as exc:  # an edited prompt (PromptConflict) stops the run
                skip(line, exc)
        for chosen in passes:
            for n, (line, pid) in enumerate(list(ids.items()), 1):
                state["prompt"] = n
                done = sum(len(bench.completed_samples(pid, c) & set(range(settings.samples))) for c in chosen)
                progress.advance(task, done)  # resumed work counts as done
                try:
                    if not bench.run(pid, cancel, conditions=chosen, resume=True):
                        outcome["finished"] = False
                        return
                except PromptTooLong as exc:
                    del ids[line]
                    skip(line, exc)
        outcome["finished"] = True

    with progress:
        outcome = _run_interruptible(work, progress.console, "overton-batch")
    finished = outcome.get("finished", False)
    left_out = f" ({len(skipped)} skipped: {', '.join(map(repr, skipped[:5]))}{' …' if len(skipped) > 5 else ''})"
    console.print(Text(printable(
        f"session: {session.path} · {len(prompts)} prompts{left_out if skipped else ''} · "
        f"conditions {', '.join(counted)} · "
        + ("complete" if finished else "interrupted; run the same command again to resume"))))
    return finished

"""``overton import``, ``stats``, ``embed``, ``export``, ``search`` and ``sessions``: data in,
figures out.

All but ``embed`` never import torch, transformers, sentence-transformers or textual
(tests/test_import_guard.py checks it); ``embed`` loads the trio's embedder. Text from files
and models is printed through ``rich.text.Text`` (after ``engine.sanitize.printable``), so
markup or escape sequences in data are shown literally. Registered on the main app by
``register(app)`` at the end of tui/cli.py.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from tui.formats import fmt as _fmt, pct as _pct
from tui.lazy import LazyConsole

if TYPE_CHECKING:  # imported where used: `overton --help` needs none of rich's renderables
    from rich.table import Table
    from rich.text import Text

console = LazyConsole()  # rich.console is imported on first use, never by `overton --help`
err = LazyConsole(stderr=True)

MAX_BAD_SHOWN = 30

DirOpt = typer.Option(None, "--sessions-dir", envvar="OVERTON_SESSIONS_DIR",
                      help="Directory of session files (default: ./sessions).")


def _t(text: object, style: str = "") -> Text:
    from rich.text import Text  # here, not at the top: `overton --help` never needs rich.text

    from engine.sanitize import printable

    return Text(printable(str(text)), style=style)


def _fail(message: str, code: int = 1) -> None:
    err.print(_t("error: ", "bold red") + _t(message), soft_wrap=True)
    raise typer.Exit(code)


def _session_path(session: str, sessions_dir: Optional[Path]) -> Path:
    from engine.paths import sessions_dir as default_dir
    from engine.session import SessionError, resolve_session_path

    try:
        return resolve_session_path(session, Path(sessions_dir) if sessions_dir else default_dir())
    except SessionError as exc:
        _fail(str(exc))


def _open_existing(session: str, sessions_dir: Optional[Path]):
    from engine.session import Session, SessionError

    path = _session_path(session, sessions_dir)
    try:
        return Session.open(path, create=False)
    except SessionError as exc:
        _fail(str(exc))


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _print_bad(bad, heading: str) -> None:
    err.print(_t(heading, "bold yellow"))
    for b in bad[:MAX_BAD_SHOWN]:
        err.print(_t("  ") + _t(str(b)), soft_wrap=True)  # one line each: easy to grep
    if len(bad) > MAX_BAD_SHOWN:
        err.print(_t(f"  … and {len(bad) - MAX_BAD_SHOWN} more"))


# --------------------------------------------------------------------------- import


def import_command(
    files: List[Path] = typer.Argument(..., help="JSONL files: {id, prompt, samples} lines, {id, prompt, condition, "
                                                 "text} lines, or hints {id, prompt, hint}.", show_default=False),
    session: str = typer.Option(..., "--session", "-s", help="Session name (in the sessions dir) or path to a .db "
                                                             "file; created if new."),
    condition: Optional[str] = typer.Option(None, "--condition", "-c", help="Condition of the imported samples "
                                            "(default: the line's 'condition', else the file's stem)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Import the good lines and report the bad ones "
                                                           "(default: any bad line aborts, nothing is written)."),
    sessions_dir: Optional[Path] = DirOpt,
) -> None:
    """Import generations made elsewhere (JSONL) into a session; prompts are matched by id."""
    import time

    from engine.importer import ImportFailed, import_parsed, parse_files
    from engine.session import Session, SessionError

    started = time.perf_counter()
    try:
        parsed = parse_files(files, condition)
    except ImportFailed as exc:
        _fail(str(exc))
    bad = [b for p in parsed for b in p.bad]
    if bad and not skip_bad:
        _print_bad(bad, f"{len(bad)} bad line{'s' if len(bad) != 1 else ''}:")
        _fail("nothing was imported; fix the lines above, or pass --skip-bad to import the rest")

    path = _session_path(session, sessions_dir)
    existed = path.exists()
    try:
        store = Session.open(path)
    except SessionError as exc:
        _fail(str(exc))
    try:
        summary = import_parsed(store, parsed, skip_bad=skip_bad)
    except ImportFailed as exc:
        store.close()
        _remove_new_session(path, existed)
        _print_bad(exc.bad_lines, f"{len(exc.bad_lines)} bad line{'s' if len(exc.bad_lines) != 1 else ''}:")
        _fail(str(exc))
    except (SessionError, ValueError, OSError, sqlite3.Error) as exc:  # e.g. disk full: rolled back
        store.close()
        _remove_new_session(path, existed)
        _fail(f"import failed, nothing was written: {exc}")
    else:
        store.close()
    elapsed = time.perf_counter() - started

    table = _table(_t(f"imported into {path}"))
    table.add_column("file", overflow="fold", min_width=12)
    table.add_column("condition", overflow="fold", min_width=10)
    for col in ("prompts new", "matched", "samples added", "skipped", "hints", "bad"):
        table.add_column(col, justify="right")
    for f in summary.files:
        conds = ", ".join(f.conditions) or ("(hints)" if f.hints_added or f.hints_skipped else "–")
        table.add_row(_t(f.file), _t(conds), str(f.prompts_added), str(f.prompts_matched),
                      str(f.generations_added), str(f.generations_skipped), str(f.hints_added),
                      str(len(f.bad_lines)))
    console.print(table)
    console.print(_t(
        f"{summary.prompts_added} prompts added, {summary.prompts_matched} matched by id; "
        f"{summary.generations_added} samples added, {summary.generations_skipped} already there (skipped); "
        f"{summary.hints_added} hints added, {summary.hints_skipped} skipped · {elapsed:.2f} s"))
    if summary.bad_lines:
        _print_bad(summary.bad_lines, f"skipped {len(summary.bad_lines)} bad line"
                                      f"{'s' if len(summary.bad_lines) != 1 else ''} (--skip-bad):")


def _remove_new_session(path: Path, existed: bool) -> None:
    """A session file this command created for an import that then failed is removed again."""
    if existed:
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            Path(f"{path}{suffix}").unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass


# --------------------------------------------------------------------------- stats


def stats_command(
    session: str = typer.Argument(..., help="Session name (in the sessions dir) or path to a .db file."),
    reference: Optional[str] = typer.Option(None, "--reference", "-r", help="Condition whose sample 0 is the "
                                            "reference (default: aligned)."),
    base: Optional[str] = typer.Option(None, "--base", "-b", help="Condition that is the base of gap closed and "
                                       "information aggregation (default: base, when present)."),
    models: Optional[str] = typer.Option(None, "--models", "-m", help="Trio whose embedder's stored vectors give "
                                         "embedding similarity (default: the default trio's, else the only "
                                         "embedder stored)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects, one per condition, and "
                                                      "nothing else."),
    sessions_dir: Optional[Path] = DirOpt,
) -> None:
    """Per-condition statistics of a session: words, diversity, similarity, coverage, gap closed, QC."""
    from engine.stats import StatsError, compute_stats

    embedder = None
    if models:
        from engine.models import ModelUnavailable, parse_models

        try:
            embedder = parse_models(models).embedder.id
        except ModelUnavailable as exc:
            _fail(str(exc), 2)
    store = _open_existing(session, sessions_dir)
    try:
        stats = compute_stats(store, reference=reference, base=base, embedding_model=embedder)
    except StatsError as exc:
        _fail(str(exc))
    finally:
        store.close()

    if as_json:
        typer.echo(stats.to_json())
        return
    if not stats.rows:
        from tui.plain_table import Printer

        Printer().note(_s(f"{store.path}: no generations yet ({stats.prompts} prompts)."))
        return
    _print_stats(stats, store.path)


def _table(title) -> Table:
    from rich import box  # here, not at the top: `overton --help` never needs rich.table
    from rich.table import Table

    # No vertical rules and one space between columns: five long condition names and nine
    # figures still fit an 80-column terminal.
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)


def _s(text: object, style: str = ""):
    """Like ``_t`` for the plain tables of ``overton stats`` (tui/plain_table.py)."""
    from engine.sanitize import printable
    from tui.plain_table import Styled

    return Styled(printable(str(text)), style)


def _stats_table(title):
    from tui.plain_table import PlainTable

    return PlainTable(title)


def _print_stats(stats, path) -> None:
    # Drawn by tui/plain_table.py, the same layout as _table()'s rich tables without rich's
    # ~40 ms of imports and rendering: `overton stats` must start within 1.5x of typer + rich.
    from tui.plain_table import Printer

    out = Printer()
    ref, base = stats.reference, stats.base
    main = _stats_table(_s(f"{path} · {stats.prompts} prompts · reference: {ref} sample 0"
                           + (f" · base: {base}" if base else ""), "italic"))
    main.add_column("condition", min_width=12)
    for col in ("prompts", "samples", "words", "divers.", "sim.", "cov.", "emb.", "gap"):
        main.add_column(col, justify="right", no_wrap=True)
    for r in stats.rows:
        name = _s(r.condition, "bold" if r.is_base or r.is_reference else "") + ("*" if r.is_reference else "")
        main.add_row(name, str(r.prompts), str(r.samples), _fmt(r.mean_words, 0), _fmt(r.diversity),
                     _fmt(r.similarity), _fmt(r.coverage), _fmt(r.embedding_similarity), _fmt(r.gap_closed))
    out.table(main)

    qc = _stats_table(_s("quality control (share of samples) · information aggregation: share of a sample's word "
                         "bag found in the reference s0, in 1 other sample (mean), in all other samples", "italic"))
    qc.add_column("condition", min_width=12)
    for col in ("abstain", "numbered", "bullets", "in ref s0", "in 1 other", "in others"):
        qc.add_column(col, justify="right", no_wrap=True)
    for r in stats.rows:
        qc.add_row(_s(r.condition), _pct(r.abstain_rate), _pct(r.numbered_list_rate), _pct(r.bullet_list_rate),
                   _fmt(r.info_in_reference), _fmt(r.info_in_one_other), _fmt(r.info_in_union_others))
    out.table(qc)

    notes = [
        f"* {ref}, the reference: samples 1..n-1 against its sample 0 (the ceiling). words: mean words per "
        "sample; divers.: mean pairwise Jaccard within a prompt (higher = less diverse); sim./cov./emb.: Jaccard, "
        f"coverage and embedding cosine against {ref} sample 0; gap: (sim − sim(base)) ÷ (ceiling − sim(base)).",
    ]
    if base is None:
        notes.append("gap closed needs a base condition: there is no 'base' here; name one with --base.")
    missing = {r.condition: r.embeddings_missing for r in stats.rows if r.embeddings_missing}
    if missing:
        model = stats.embedding_model or "any embedder"
        notes.append(f"emb.: texts without a stored embedding from {model}: "
                     f"{', '.join(f'{c} {n}' for c, n in missing.items())}; run `overton embed SESSION`.")
    for note in notes:
        out.note(_s(note, "dim"))
    if stats.annotators:
        _print_annotations(stats, out)


def _print_annotations(stats, out) -> None:
    n = len(stats.annotators)
    table = _stats_table(_s(f"annotations by {n} annotator{'s' if n != 1 else ''} ({', '.join(stats.annotators)}) · "
                            "ratings 1–5, every annotator's rating counted", "italic"))
    table.add_column("condition", min_width=12)
    for col in ("ratings", "mean", "1", "2", "3", "4", "5", "notes", "preferred"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("labels")
    for r in stats.rows:
        labels = ", ".join(f"{k} {v}" for k, v in r.label_counts.items()) or "–"
        table.add_row(_s(r.condition), str(r.ratings), _fmt(r.mean_rating, 2), *(str(c) for c in r.rating_counts),
                      str(r.notes), str(r.preference_wins), _s(labels))
    out.table(table)
    p = stats.preferences
    lines = []
    if p.get("preferences"):
        lines.append(f"preferences: {p['preferences']} on {p['prompts']} prompts; tie {p.get('tie', 0)}, "
                     f"all bad {p.get('all-bad', 0)}")
    a = stats.agreement or {}
    if n >= 2 and a:
        r = a["ratings"]
        lines.append(f"agreement: ratings on {r['generations']} shared answers ({r['pairs']} pairs): exact "
                     f"{_pct(r['exact'])}, within one {_pct(r['within_one'])}, mean |diff| {_fmt(r['mean_abs_diff'])}; "
                     f"labels: same set {_pct(a['labels']['exact'])} of {a['labels']['items']} pairs; "
                     f"preferences: same {_pct(a['preferences']['exact'])} of {a['preferences']['pairs']} pairs")
    for line in lines:
        out.note(_s(line, "dim"))


# --------------------------------------------------------------------------- embed


def embed_command(
    session: str = typer.Argument(..., help="Session name (in the sessions dir) or path to a .db file."),
    models: str = typer.Option("default", "--models", "-m", help="Trio whose embedder is used (see `overton models`) "
                               "or base=...,aligned=...,embedder=PATH_OR_ID."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, max=4096, help="Texts embedded (and stored) at a time."),
    sessions_dir: Optional[Path] = DirOpt,
) -> None:
    """Compute and store the embeddings that a session's texts are missing (for `overton stats`)."""
    from engine.models import ModelUnavailable, parse_models

    try:
        spec = parse_models(models).embedder
    except ModelUnavailable as exc:
        _fail(str(exc), 2)
    store = _open_existing(session, sessions_dir)
    try:
        texts: dict[str, None] = {}
        for g in store.generations():
            if g["text"] is not None:
                texts[g["text"]] = None
        for p in store.prompts():
            texts[p["text"]] = None
            for h in store.hints(p["id"]):
                texts[h["text"]] = None
        have = store.embeddings_for(spec.id, texts)
        missing = [t for t in texts if t not in have]
        if not missing:
            console.print(_t(f"all {len(texts)} texts already have embeddings from {spec.name} ({spec.id})."))
            return

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from engine.embeddings import load_embedder

        try:
            embedder = load_embedder(spec, lambda msg, frac: err.print(_t(f"[embedder] {msg}", "dim")))
        except ModelUnavailable as exc:
            _fail(str(exc))
        progress = Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=err)
        with progress:
            task = progress.add_task("embedding", total=len(missing))
            for start in range(0, len(missing), batch_size):
                chunk = missing[start:start + batch_size]
                vectors = embedder.embed(chunk)
                try:
                    store.store_embeddings(spec.id, dict(zip(chunk, vectors)))  # each chunk kept if interrupted
                except sqlite3.Error as exc:
                    from tui.errors import user_message

                    _fail(user_message(exc, store.path))
                progress.advance(task, len(chunk))
        console.print(_t(f"stored {len(missing)} embeddings from {spec.name} ({spec.id}); "
                         f"{len(texts) - len(missing)} were already there."))
    finally:
        store.close()


# --------------------------------------------------------------------------- export


def export_command(
    session: str = typer.Argument(..., help="Session name (in the sessions dir) or path to a .db file."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="csv, json, jsonl or md (default: from the "
                                      "--output suffix, else md).", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default or '-': stdout). "
                                          "csv also writes PATH's .summary.csv and .agreement.csv beside it.",
                                          show_default=False),
    reference: Optional[str] = typer.Option(None, "--reference", "-r", help="Condition whose sample 0 is the "
                                            "reference (default: aligned, when present)."),
    base: Optional[str] = typer.Option(None, "--base", "-b", help="Base condition of gap closed (default: base, "
                                       "when present)."),
    include_all: bool = typer.Option(False, "--all", help="Every answer, older batches and cancelled ones too "
                                     "(default: those the statistics count, plus any annotated one)."),
    sessions_dir: Optional[Path] = DirOpt,
) -> None:
    """Export answers with metrics and annotations, the per-condition summary and annotator agreement."""
    from engine.export import ExportError, build_export, format_for, outputs, render, write_files
    from engine.stats import StatsError

    to_stdout = output is None or str(output) == "-"
    try:
        name = format_for(fmt, None if to_stdout else output)
    except ExportError as exc:
        _fail(str(exc))
    if not to_stdout:
        output = output.expanduser()
        if output.is_dir():
            _fail(f"{output} is a directory; give a file name for the export")
        if not output.parent.is_dir():
            _fail(f"the folder {output.parent} does not exist; create it or choose another output path")
    store = _open_existing(session, sessions_dir)
    try:
        data = build_export(store, reference=reference, base=base, include_all=include_all)
    except StatsError as exc:
        _fail(str(exc))
    finally:
        store.close()
    if to_stdout:
        text = render(data, name)
        if _stdout_is_terminal():  # piped or redirected, the output stays exact
            from engine.sanitize import printable

            text = printable(text)
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        written = write_files(outputs(data, name, output), protect=store.path)
    except ExportError as exc:
        _fail(f"{exc}; nothing was written")
    c = data.counts
    from engine.sanitize import printable

    # One unstyled line: written directly, rich's console (~25 ms to import) is not needed.
    sys.stderr.write(printable(f"exported {c['generations']} answers of {c['prompts_exported']} prompts, "
                               f"{c['annotations']} annotations ({name}): {', '.join(str(p) for p in written)}")
                     + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- search


def search_command(
    session: str = typer.Argument(..., help="Session name (in the sessions dir) or path to a .db file."),
    query: str = typer.Argument(..., help="Words to find (all of them; \"a phrase\", tea*, OR, NOT work)."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=10000, help="Most hits shown."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of hits and nothing else."),
    sessions_dir: Optional[Path] = DirOpt,
) -> None:
    """Full-text search over a session's prompts and answers."""
    from engine.search import search

    store = _open_existing(session, sessions_dir)
    try:
        hits = search(store, query, limit)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(hits, ensure_ascii=False, indent=2))
        return
    if not hits:
        console.print(_t(f"no prompt or answer in {store.path} matches {query!r}."))
        return
    table = _table(_t(f"{len(hits)} hit{'s' if len(hits) != 1 else ''} for {query!r} in {store.path}"))
    table.add_column("prompt", overflow="fold", max_width=16)
    table.add_column("in", overflow="fold", max_width=16)
    table.add_column("text", overflow="fold")
    for h in hits:
        where = "prompt" if h["kind"] == "prompt" else f"{h['condition']} #{h['sample_index']}"
        text = _t(h["snippet"].replace("\n", " "))  # same length: the spans still fit
        for start, end in h["spans"]:
            text.stylize("bold yellow", start, end)
        table.add_row(_t(h["external_id"] or h["prompt_id"]), _t(where), text)
    console.print(table)


# --------------------------------------------------------------------------- sessions


def sessions_command(sessions_dir: Optional[Path] = DirOpt) -> None:
    """List the session files in the sessions dir (read only: nothing is opened for writing)."""
    from engine.paths import sessions_dir as default_dir
    from engine.session import SessionError, list_sessions

    directory = Path(sessions_dir).expanduser() if sessions_dir else default_dir()
    try:
        infos = list_sessions(directory)
    except SessionError as exc:
        _fail(str(exc))
    if not infos:
        console.print(_t(f"no session files in {directory}."))
        return
    table = _table(_t(f"{len(infos)} session file{'s' if len(infos) != 1 else ''} in {directory}"))
    table.add_column("session", overflow="fold")
    table.add_column("modified", no_wrap=True)
    for col in ("prompts", "answers", "annotations"):
        table.add_column(col, justify="right", no_wrap=True)
    for i in infos:
        if i["error"]:
            table.add_row(_t(i["name"]), _t(i["modified"] or ""), _t("–"), _t("–"), _t("–"))
            table.add_row("", _t(i["error"], "red"), "", "", "")
            continue
        table.add_row(_t(i["name"]), _t((i["modified"] or "").replace("T", " ")[:16]),
                      *(_t("–" if i[k] is None else str(i[k])) for k in ("prompts", "generations", "annotations")))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
    app.command("stats")(stats_command)
    app.command("embed")(embed_command)
    app.command("export")(export_command)
    app.command("search")(search_command)
    app.command("sessions")(sessions_command)

"""``overton import``, ``overton stats`` and ``overton embed``: data in, figures out.

``import`` and ``stats`` never import torch, transformers, sentence-transformers or textual
(tests/test_import_guard.py checks it); ``embed`` loads the trio's embedder. Text from files
and models is printed through ``rich.text.Text`` (after ``engine.sanitize.printable``), so
markup or escape sequences in data are shown literally. Registered on the main app by
``register(app)`` at the end of tui/cli.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
err = Console(stderr=True)

MAX_BAD_SHOWN = 30

DirOpt = typer.Option(None, "--sessions-dir", envvar="OVERTON_SESSIONS_DIR",
                      help="Directory of session files (default: ./sessions).")


def _t(text: object, style: str = "") -> Text:
    from engine.sanitize import printable

    return Text(printable(str(text)), style=style)


def _fail(message: str, code: int = 1) -> None:
    err.print(Text("error: ", style="bold red") + _t(message), soft_wrap=True)
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


def _print_bad(bad, heading: str) -> None:
    err.print(_t(heading, "bold yellow"))
    for b in bad[:MAX_BAD_SHOWN]:
        err.print(Text("  ") + _t(str(b)), soft_wrap=True)  # one line each: easy to grep
    if len(bad) > MAX_BAD_SHOWN:
        err.print(_t(f"  … and {len(bad) - MAX_BAD_SHOWN} more"))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


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
    except (SessionError, ValueError, OSError) as exc:
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
        console.print(_t(f"{store.path}: no generations yet ({stats.prompts} prompts)."))
        return
    _print_stats(stats, store.path)


def _table(title) -> Table:
    # No vertical rules and one space between columns: five long condition names and nine
    # figures still fit an 80-column terminal.
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)


def _print_stats(stats, path) -> None:
    ref, base = stats.reference, stats.base
    main = _table(_t(f"{path} · {stats.prompts} prompts · reference: {ref} sample 0"
                     + (f" · base: {base}" if base else "")))
    main.add_column("condition", overflow="fold", min_width=12)
    for col in ("prompts", "samples", "words", "divers.", "sim.", "cov.", "emb.", "gap"):
        main.add_column(col, justify="right", no_wrap=True)
    for r in stats.rows:
        name = _t(r.condition, "bold" if r.is_base or r.is_reference else "") + Text("*" if r.is_reference else "")
        main.add_row(name, str(r.prompts), str(r.samples), _fmt(r.mean_words, 0), _fmt(r.diversity),
                     _fmt(r.similarity), _fmt(r.coverage), _fmt(r.embedding_similarity), _fmt(r.gap_closed))
    console.print(main)

    qc = _table("quality control (share of samples) · information aggregation: share of a sample's word bag "
                "found in the reference s0, in 1 other sample (mean), in all other samples")
    qc.add_column("condition", overflow="fold", min_width=12)
    for col in ("abstain", "numbered", "bullets", "in ref s0", "in 1 other", "in others"):
        qc.add_column(col, justify="right", no_wrap=True)
    for r in stats.rows:
        qc.add_row(_t(r.condition), _pct(r.abstain_rate), _pct(r.numbered_list_rate), _pct(r.bullet_list_rate),
                   _fmt(r.info_in_reference), _fmt(r.info_in_one_other), _fmt(r.info_in_union_others))
    console.print(qc)

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
        console.print(_t(note, "dim"))


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
                store.store_embeddings(spec.id, dict(zip(chunk, vectors)))  # each chunk kept if interrupted
                progress.advance(task, len(chunk))
        console.print(_t(f"stored {len(missing)} embeddings from {spec.name} ({spec.id}); "
                         f"{len(texts) - len(missing)} were already there."))
    finally:
        store.close()


def register(app: typer.Typer) -> None:
    app.command("import")(import_command)
    app.command("stats")(stats_command)
    app.command("embed")(embed_command)

"""The ``overton`` command: launches the app, or runs the same job headless.

Heavy libraries (torch, transformers, textual) are imported inside the commands that need
them, so ``overton --help`` and the headless reports start quickly.
"""

from __future__ import annotations

import os
import sys

QUICK_COMMANDS = ("stats", "export", "sessions", "search", "models")
if len(sys.argv) > 1 and (sys.argv[1] in QUICK_COMMANDS or "--help" in sys.argv):
    # These print and exit within a tenth of a second, having made many long-lived objects
    # (modules, click parameters): young-generation collections during start-up find nothing
    # to free and cost ~5% of it (bench/startup.py). Long runs keep Python's defaults.
    import gc

    gc.set_threshold(50_000, 50, 50)

from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

import typer  # noqa: E402

from tui.lazy import LazyConsole

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="overton: compare a base model, its aligned sibling and the hint-guided base model.",
    # Plain (click) help and usage errors: typer's rich help imports typer.rich_utils ->
    # rich.markdown -> markdown_it, which alone doubles the start-up of `overton --help`.
    rich_markup_mode=None,
)
console = LazyConsole()  # rich.console is imported on first use, never by --help
err = LazyConsole(stderr=True)

SessionOpt = typer.Option(None, "--session", "-s", help="Session name (in the sessions dir) or path to a .db file.")
ModelsOpt = typer.Option("default", "--models", "-m", help="Trio name (see `overton models`) or base=PATH_OR_ID,aligned=...,embedder=...")
SamplesOpt = typer.Option(1, "--samples", "-n", min=1, max=50, help="Samples per condition.")
MaxTokOpt = typer.Option(256, "--max-new-tokens", min=1, max=8192, help="Most new tokens per answer.")
SeedOpt = typer.Option(0, "--seed", help="Seed of sample 0; sample i uses seed + i.")
TempOpt = typer.Option(0.5, "--temperature", "-t", min=0.0, help="Sampling temperature (0 = greedy).")
RepOpt = typer.Option(1.1, "--repetition-penalty", min=0.01, help="Repetition penalty.")
DirOpt = typer.Option(None, "--sessions-dir", envvar="OVERTON_SESSIONS_DIR", help="Directory of session files (default: ./sessions).")
ServerUrlOpt = typer.Option(None, "--server-url", envvar="OVERTON_SERVER_URL", help="OpenAI-compatible inference server for models given as openai:MODEL (e.g. http://localhost:8000/v1); overrides [server] url in overton.toml.")
ApiKeyEnvOpt = typer.Option(None, "--api-key-env", help="Name of the environment variable holding the inference servers' API key (the key is never stored).")
ConcurrencyOpt = typer.Option(None, "--concurrency", min=1, max=512, help="Requests in flight per condition on an inference server (default 4, or the config file's).")
ServerNOpt = typer.Option(None, "--server-n/--no-server-n", help="Ask an inference server for all samples in one request (its n) instead of one request per sample.")


def USER_ERRORS() -> tuple[type[Exception], ...]:
    """Exceptions whose message is for the user: shown without a traceback."""
    from engine.backend import BackendError, PromptTooLong
    from engine.models import ModelUnavailable
    from engine.session import SessionError
    from engine.workbench import EmptyPrompt, NoPool, PromptConflict

    return (ModelUnavailable, PromptTooLong, BackendError, SessionError, EmptyPrompt, NoPool, PromptConflict)


def fail(message: str, code: int = 1) -> None:
    # Messages quote what the user typed (paths, names): show control characters as symbols.
    from rich.text import Text

    from engine.sanitize import printable

    err.print(Text("error: ", style="bold red") + Text(printable(message)))
    raise typer.Exit(code)


def _settings(samples, max_new_tokens, seed, temperature, repetition_penalty):
    from engine.settings import GenerationSettings

    try:
        return GenerationSettings(temperature=temperature, repetition_penalty=repetition_penalty,
                                  max_new_tokens=max_new_tokens, samples=samples, seed=seed)
    except ValueError as exc:
        fail(str(exc), 2)


def _trio(models: str, server_url=None, api_key_env=None, concurrency=None, server_n=None):
    """The trio of --models; ``openai:`` models get their servers from overton.toml and the
    server options (engine.servers)."""
    from engine.models import ModelUnavailable, parse_models
    from engine.servers import load_config

    try:
        config = load_config(url=server_url, api_key_env=api_key_env, concurrency=concurrency, use_n=server_n)
        return parse_models(models, config=config)
    except ModelUnavailable as exc:
        fail(str(exc), 2)


def _check_models(trio) -> None:
    """Fail before a session file is created when a model is not there at all."""
    from engine.models import ModelUnavailable, source_path

    for spec in trio.roles().values():
        if spec.kind == "openai":  # served: the server must answer and serve the model
            from engine.servers import probe

            ok, detail = probe(spec, timeout=10.0)
            if not ok:
                fail(detail)
            continue
        try:
            source_path(spec)
        except ModelUnavailable as exc:
            fail(str(exc))


def _open_session(session: Optional[str], sessions_dir: Optional[Path]):
    from engine.paths import sessions_dir as default_dir
    from engine.session import Session, SessionError, resolve_session_path

    try:
        path = resolve_session_path(session, Path(sessions_dir) if sessions_dir else default_dir())
        return Session.open(path)
    except SessionError as exc:
        fail(str(exc))


def _session_exists(session: Optional[str], sessions_dir: Optional[Path]) -> bool:
    from engine.paths import sessions_dir as default_dir
    from engine.session import SessionError, resolve_session_path

    try:
        return resolve_session_path(session, Path(sessions_dir) if sessions_dir else default_dir()).exists()
    except SessionError:
        return True  # _open_session reports it; never remove anything then


@app.callback(invoke_without_command=True)
def main_command(
    ctx: typer.Context,
    session: Optional[str] = SessionOpt,
    models: str = ModelsOpt,
    samples: int = SamplesOpt,
    max_new_tokens: int = MaxTokOpt,
    seed: int = SeedOpt,
    temperature: float = TempOpt,
    repetition_penalty: float = RepOpt,
    sessions_dir: Optional[Path] = DirOpt,
    annotator: Optional[str] = typer.Option(None, "--annotator", help="Name stored with your annotations (default: your login name)."),
    server_url: Optional[str] = ServerUrlOpt,
    api_key_env: Optional[str] = ApiKeyEnvOpt,
    concurrency: Optional[int] = ConcurrencyOpt,
    server_n: Optional[bool] = ServerNOpt,
) -> None:
    """Launch the three-pane app (base | aligned | hint-guided base)."""
    if ctx.invoked_subcommand is not None:
        return
    from engine.annotations import AnnotationError, check_annotator
    from engine.paths import sessions_dir as default_dir

    if annotator is not None:
        try:
            annotator = check_annotator(annotator)
        except AnnotationError as exc:
            fail(str(exc), 2)
    settings = _settings(samples, max_new_tokens, seed, temperature, repetition_penalty)
    trio = _trio(models, server_url, api_key_env, concurrency, server_n)
    _check_models(trio)
    store = _open_session(session, sessions_dir)
    from tui.app import run_app

    final = store
    try:
        final = run_app(trio, store, settings, annotator=annotator,
                        sessions_dir=Path(sessions_dir) if sessions_dir else default_dir())
    finally:
        store.close()
        if final is not store:  # the user switched sessions in the app
            final.close()
    from rich.text import Text

    console.print(Text(f"session saved in {final.path}"))


@app.command()
def run(
    prompt: Optional[str] = typer.Argument(None, help="The prompt to answer (or use --prompts FILE)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", "-p", help="Batch: a text file (one prompt a line) or JSONL ({\"id\", \"prompt\"} or {\"messages\": [...]})."),
    conditions: Optional[str] = typer.Option(None, "--conditions", "-c", help="Comma-separated conditions, or 'all' (default: base,aligned,hinted)."),
    pool: Optional[Path] = typer.Option(None, "--pool", help="JSONL of {\"prompt\", \"answer\"} pairs for icl-random / icl-knn."),
    hint: Optional[str] = typer.Option(None, "--hint", help="Your own hint instead of the aligned model's summary."),
    session: Optional[str] = SessionOpt,
    models: str = ModelsOpt,
    samples: Optional[int] = typer.Option(None, "--samples", "-n", min=1, max=50, help="Samples per condition (default: 1 for one prompt, 5 for --prompts)."),
    max_new_tokens: int = MaxTokOpt,
    seed: int = SeedOpt,
    temperature: float = TempOpt,
    repetition_penalty: float = RepOpt,
    sessions_dir: Optional[Path] = DirOpt,
    server_url: Optional[str] = ServerUrlOpt,
    api_key_env: Optional[str] = ApiKeyEnvOpt,
    concurrency: Optional[int] = ConcurrencyOpt,
    server_n: Optional[bool] = ServerNOpt,
) -> None:
    """Generate the conditions headless for one prompt (printed as they stream) or a prompt file."""
    from engine.conditions import parse_conditions
    from engine.examples import load_pool
    from engine.prompt_file import read_prompts

    if (prompt is None) == (prompts is None):
        fail("give either a PROMPT or --prompts FILE", 2)
    from tui.errors import is_invalid_text, user_message

    for what, text in (("prompt", prompt), ("hint", hint)):
        if is_invalid_text(text):
            fail(f"the {what} is not valid UTF-8 text (check the terminal's encoding): {text!r}", 2)
    if prompt is not None and not prompt.strip():
        fail("the prompt is empty; give a question or instruction", 2)
    if hint is not None and not hint.strip():
        fail("the hint is empty; leave --hint out to let the aligned model write it", 2)
    if hint is not None and prompts is not None:
        fail("--hint goes with a single PROMPT; a batch takes each prompt's hint from the aligned model", 2)
    try:
        chosen = parse_conditions(conditions)
        lines = read_prompts(prompts) if prompts is not None else None
        pairs = load_pool(pool) if pool is not None else []
    except (ValueError, OSError) as exc:
        fail(str(exc), 2)
    n = samples or (5 if lines is not None else 1)
    settings = _settings(n, max_new_tokens, seed, temperature, repetition_penalty)
    trio = _trio(models, server_url, api_key_env, concurrency, server_n)
    _check_models(trio)
    existed = _session_exists(session, sessions_dir)
    store = _open_session(session, sessions_dir)
    from tui.headless import run_batch, run_prompt

    try:
        if lines is not None:
            finished = run_batch(console.real, trio, store, settings, lines, chosen, pool=pairs)
        else:
            finished = run_prompt(console.real, trio, store, settings, prompt, hint, chosen, pool=pairs)
    except USER_ERRORS() as exc:
        fail(str(exc))
    except Exception as exc:  # SQLite (disk full, read-only), a chat template refused by the sandbox
        message = user_message(exc, store.path)
        if message is None:
            raise
        fail(message)
    finally:
        try:
            stored = bool(store.prompts())
        except Exception:  # a damaged or unwritable session: never remove it
            stored = True
        store.close()
        if not existed and not stored:  # refused before anything was stored: leave no empty file
            from tui.commands_data import _remove_new_session

            _remove_new_session(store.path, existed)
    if not finished:
        raise typer.Exit(130)


@app.command("models")
def models_command(
    server_url: Optional[str] = ServerUrlOpt,
    api_key_env: Optional[str] = ApiKeyEnvOpt,
) -> None:
    """List the model trios (built in and from overton.toml), the inference servers, and whether each model is ready."""
    from rich.table import Table
    from rich.text import Text

    from engine.models import TRIOS, ModelUnavailable, parse_models, readiness
    from engine.servers import load_config

    try:
        config = load_config(url=server_url, api_key_env=api_key_env)
    except ModelUnavailable as exc:
        fail(str(exc), 2)
    trios = list(TRIOS.values())
    for name in config.trios:
        try:
            trios.append(parse_models(name, config=config))
        except ModelUnavailable as exc:
            console.print(Text(f"trio '{name}' in {config.path}: {exc}", style="red"))
    servers = ([("default", config.default_server())] if config.default_server() else []) + \
        [(name, config.server(name)) for name in config.servers]
    if servers:
        table = Table(title=Text(f"inference servers ({config.path or 'command line'})"), title_justify="left")
        for col in ("name", "url", "api key from", "concurrency", "n", "params"):
            table.add_column(col, overflow="fold")
        for name, s in servers:
            table.add_row(name, s.url, f"${s.api_key_env}" if s.api_key_env else "-", str(s.concurrency),
                          "yes" if s.use_n else "no", s.params)
        console.print(table)
        console.print(Text("models on a server: --models base=openai:MODEL@URL_OR_NAME,aligned=...", style="dim"))
        console.print()
    for trio in trios:
        table = Table(title=Text(f"trio '{trio.name}'"), title_justify="left", expand=False)
        for col in ("role", "model", "family", "ready", "detail / install"):
            table.add_column(col, overflow="fold")
        for role, spec in trio.roles().items():
            ok, detail = readiness(spec)
            table.add_row(role, spec.name, spec.family, Text("yes", "green") if ok else Text("no", "red"),
                          Text(detail if ok else detail.replace("\n", " ")))
        console.print(table)
        if trio.note:
            console.print(Text(trio.note, style="dim"))
        console.print()


from tui.commands_data import register as _register_data_commands
_register_data_commands(app)


def _app_for(argv: list[str]) -> typer.Typer:
    """The app, holding only the command that ``argv`` names when it names one.

    typer turns the signature of every registered command into click parameters before it
    parses anything; building one instead of eight is a measurable part of the start-up of
    `overton stats` and `overton export` (bench/startup.py). `overton --help` and the app
    itself (no command) get everything.
    """
    if len(argv) < 2 or argv[1].startswith("-"):
        return app
    keep = [c for c in app.registered_commands
            if (c.name or c.callback.__name__.replace("_", "-")) == argv[1]]
    if not keep:
        return app  # a typo: the full app says which commands there are
    import copy

    one = copy.copy(app)
    one.registered_commands = keep
    return one


def main() -> None:
    # Weights come from installed packages and local folders only: never reach for a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        _app_for(sys.argv)()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

"""The engine is a library without UI; headless commands must not pay for torch."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engine_never_imports_textual_or_tui():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imported_modules(p) & {"textual", "tui"})
        for p in (ROOT / "engine").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def _modules_after(code: str) -> dict:
    probe = code + "\nimport sys, json\nprint(json.dumps({m: m in sys.modules for m in ('torch', 'transformers', 'textual', 'sentence_transformers')}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_light_engine_modules_do_not_import_torch():
    loaded = _modules_after(
        "import engine.metrics, engine.session, engine.prompt_metrics, engine.models, engine.prompts, "
        "engine.conditions, engine.workbench, engine.convert, engine.sanitize"
    )
    assert loaded == {"torch": False, "transformers": False, "textual": False, "sentence_transformers": False}


def test_help_and_models_commands_stay_headless():
    loaded = _modules_after(
        "from typer.testing import CliRunner\nfrom tui.cli import app\n"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['models']); assert r.exit_code == 0, r.output\n"
    )
    assert loaded == {"torch": False, "transformers": False, "textual": False, "sentence_transformers": False}


def test_import_and_stats_commands_stay_headless(tmp_path):
    """`overton import` and `overton stats` (table and --json) never load torch & co."""
    lines = "\n".join(json.dumps(r) for r in (
        {"id": "p1", "prompt": "What is tea?", "samples": ["Tea is a drink.\n```", "A plant."]},
        {"id": "p2", "prompt": "Why sleep?", "samples": ["Rest helps memory.", "Health."]},
    ))
    (tmp_path / "aligned.jsonl").write_text(lines + "\n", encoding="utf-8")
    (tmp_path / "base.jsonl").write_text(lines.replace("Tea is", "Tea was") + "\n", encoding="utf-8")
    (tmp_path / "x.hints.jsonl").write_text(json.dumps({"id": "p1", "prompt": "What is tea?", "hint": "h"}) + "\n",
                                            encoding="utf-8")
    db = tmp_path / "s.db"
    loaded = _modules_after(
        "from typer.testing import CliRunner\nfrom tui.cli import app\n"
        f"files = [{str(tmp_path / 'aligned.jsonl')!r}, {str(tmp_path / 'base.jsonl')!r}, {str(tmp_path / 'x.hints.jsonl')!r}]\n"
        f"r = CliRunner().invoke(app, ['import', *files, '--session', {str(db)!r}]); assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(app, ['stats', {str(db)!r}]); assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(app, ['stats', {str(db)!r}, '--json']); assert r.exit_code == 0, r.output\n"
        "import json as _j; assert [d['condition'] for d in _j.loads(r.stdout)] == ['base', 'aligned']\n"
        "r = CliRunner().invoke(app, ['embed', '--help']); assert r.exit_code == 0, r.output\n"
    )
    assert loaded == {"torch": False, "transformers": False, "textual": False, "sentence_transformers": False}


def test_export_search_and_sessions_commands_stay_headless(tmp_path):
    """`overton export` (every format, stdout and files), `stats`, `search` and `sessions` on an
    annotated session never load torch & co."""
    db = tmp_path / "s.db"
    out = tmp_path / "out"
    loaded = _modules_after(
        "from typer.testing import CliRunner\nfrom tui.cli import app\n"
        "from engine.session import Session\nfrom engine.annotations import Annotations\n"
        f"s = Session.open({str(db)!r})\n"
        "p = s.add_prompt('What is tea?')\n"
        "g = s.add_generation(p, condition='aligned', text='Tea is a drink.')\n"
        "s.add_generation(p, condition='base', text='A plant.')\n"
        "a = Annotations(s, 'ann'); a.set_rating(g, 4); a.toggle_label(g, 'helpful'); a.set_preference(p, 'aligned')\n"
        "s.close()\n"
        "run = lambda *args: CliRunner().invoke(app, list(args))\n"
        "for fmt in ('csv', 'json', 'jsonl', 'md'):\n"
        f"    r = run('export', {str(db)!r}, '--format', fmt); assert r.exit_code == 0, r.output\n"
        f"    r = run('export', {str(db)!r}, '--format', fmt, '--output', {str(out)!r} + '.' + fmt); assert r.exit_code == 0, r.output\n"
        f"r = run('stats', {str(db)!r}); assert r.exit_code == 0 and 'annotations by 1 annotator' in r.stdout, r.output\n"
        f"r = run('stats', {str(db)!r}, '--json'); assert r.exit_code == 0, r.output\n"
        f"r = run('search', {str(db)!r}, 'tea'); assert r.exit_code == 0 and 'What is tea' in r.stdout, r.output\n"
        f"r = run('sessions', '--sessions-dir', {str(tmp_path)!r}); assert r.exit_code == 0 and 's.db' in r.stdout, r.output\n"
    )
    assert loaded == {"torch": False, "transformers": False, "textual": False, "sentence_transformers": False}
    assert (tmp_path / "out.summary.csv").is_file() and (tmp_path / "out.md").is_file()


def test_data_modules_do_not_import_torch():
    loaded = _modules_after("import engine.importer, engine.stats, engine.annotations, engine.export, "
                            "engine.search, tui.commands_data")
    assert loaded == {"torch": False, "transformers": False, "textual": False, "sentence_transformers": False}


def _command_modules(tmp_path, *argv: str) -> set[str]:
    """Top-level packages a real ``python -m tui.cli ARGV`` process imported (not CliRunner:
    the test process has imported far more by then)."""
    probe = ("import runpy, sys, json, atexit\n"
             "atexit.register(lambda: sys.__stderr__.write('MODULES ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules})) + '\\n'))\n"
             f"sys.argv = ['overton', *{list(argv)!r}]\n"
             "runpy.run_module('tui.cli', run_name='__main__')\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = [x for x in out.stderr.splitlines() if x.startswith("MODULES ")][-1]
    return set(json.loads(line[len("MODULES "):]))


def _startup_session(path: Path) -> None:
    from engine.annotations import Annotations
    from engine.session import Session

    with Session.open(path) as s:
        p = s.add_prompt("What is tea?")
        g = s.add_generation(p, condition="aligned", text="Tea is a drink made from leaves.")
        s.add_generation(p, condition="aligned", sample_index=1, text="A plant's leaves, brewed.")
        s.add_generation(p, condition="base", text="Tea is a plant.\n1. green\n2. black")
        Annotations(s, "ann").set_rating(g, 4)


# Start-up (issue 5 target 4, bench/startup.py): what each of these costs `overton --help`,
# `stats` and `export`, whose whole budget is 1.5x `python -c "import typer, rich"`.
HEAVY_FOR_HELP = {"torch", "transformers", "sentence_transformers", "textual",
                  "pydantic",  # typer >= 0.29 coerces parameters through pydantic (pyproject pins < 0.29)
                  "markdown_it",  # typer's rich help (rich_markup_mode) imports rich.markdown
                  "nltk", "numpy", "sqlite_utils", "ulid"}
HEAVY_FOR_DATA = HEAVY_FOR_HELP | {"statistics"}  # engine.averages.mean instead (fractions, decimal, random)


def test_help_imports_nothing_heavy(tmp_path):
    loaded = _command_modules(tmp_path, "--help")
    assert loaded & HEAVY_FOR_HELP == set()


def test_stats_and_export_import_nothing_heavy_and_no_rich_console(tmp_path):
    """With word bags stored (after a first `overton stats`), neither command tokenizes (nltk),
    nor draws with rich (tui/plain_table.py), nor imports statistics or pydantic."""
    db = tmp_path / "s.db"
    _startup_session(db)
    _command_modules(tmp_path, "stats", str(db))  # stores the word bags
    for argv in (["stats", str(db)], ["export", str(db), "--format", "md", "--output", str(tmp_path / "o.md")],
                 ["export", str(db), "--format", "csv", "--output", str(tmp_path / "o.csv")]):
        loaded = _command_modules(tmp_path, *argv)
        assert loaded & HEAVY_FOR_DATA == set(), argv
    probe = ("import runpy, sys\n"
             f"sys.argv = ['overton', 'stats', {str(db)!r}]\n"
             "try:\n    runpy.run_module('tui.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('rich.console', 'rich.table', 'rich.text', 'rich.markdown') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:]

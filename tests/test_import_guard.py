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

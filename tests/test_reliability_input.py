"""Issue 6, bad input: every case gets a clear message, loses nothing and prints no traceback.

Families rather than single strings: Rich/Textual markup, terminal escape sequences, session
names and paths, encodings of imported and prompt files, broken session files (fed to every
command that opens a session), unknown or missing models, a half-written model cache, prompts
too long for the context, chat templates that try to leave Jinja's sandbox.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from engine import events as ev
from engine.importer import ImportFailed, import_files, parse_file
from engine.models import (
    GEMMA_BASE,
    MINILM,
    SMOL_INSTRUCT,
    ModelSpec,
    ModelUnavailable,
    parse_models,
    source_path,
)
from engine.sanitize import printable
from engine.session import SCHEMA_VERSION, Session, SessionError, resolve_session_path
from engine.settings import GenerationSettings
from engine.workbench import EmptyPrompt, Workbench
from tui.cli import app

# ----------------------------------------------------------------------------- the families

MARKUP = {
    "bold": "[bold]loud[/bold]",
    "close all": "before [/] after",
    "link": "[link=https://evil.example/x]click me[/link]",
    "unbalanced open": "an [unclosed bracket",
    "lone open": "[",
    "stray close": "text [/foo] more",
    "style soup": "[bold red on blue blink]x[/]",
    "action": "[@click=app.quit]quit[/]",
    "escaped": "\\[not markup]",
}
ESCAPES = {
    "CSI colour": "\x1b[31mred\x1b[0m",
    "CSI clear screen": "\x1b[2J\x1b[Hgone",
    "OSC title": "\x1b]0;pwned title\x07",
    "OSC 8 hyperlink": "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",
    "C1 CSI": "\x9b31mc1",
    "C1 OSC + ST": "\x9d0;t\x9c",
    "BEL": "ding\x07ding",
    "backspace": "abc\x08\x08XY",
    "CR overwrite": "safe text\rEVIL",
    "NUL": "a\x00b",
    "DEL": "a\x7fb",
}
# What may never reach a terminal: C0 controls but tab/newline, DEL, C1 controls.
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def models_arg(trio) -> str:
    return f"base={trio.base.ref},aligned={trio.aligned.ref}"


def invoke(*args, **kw):
    # Wide, so that tables never fold the text under test.
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400"}, **kw)


def no_traceback(result) -> None:
    out = result.output
    assert "Traceback" not in out and not isinstance(result.exception, (AssertionError, NameError)), out
    # A user error ends in SystemExit (typer.Exit), never in another exception.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


def plain_console() -> tuple[Console, object]:
    import io

    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, color_system=None, width=200, soft_wrap=True), buf


# ----------------------------------------------------------------------------- sanitising


@pytest.mark.parametrize("name", list(ESCAPES))
def test_printable_neutralises_every_escape_family(name):
    text = ESCAPES[name]
    shown = printable(text)
    assert not RAW_CONTROL.search(shown), repr(shown)
    # Visible stand-ins keep the text readable and of the same length: nothing silently dropped.
    assert len(shown) >= len(text.replace("\r\n", "\n"))
    if "\x1b" in text:
        assert "␛" in shown


def test_printable_keeps_text_and_markup_unchanged():
    for text in [*MARKUP.values(), "tab\tand\nnewline", "ünïcödé ✓ 中文", ""]:
        assert printable(text) == text
    assert printable("crlf\r\nline") == "crlf\nline"


@pytest.mark.parametrize("family", ["markup", "escapes"])
def test_streamed_model_text_prints_literally_in_overton_run(family):
    """The `overton run` printer gets model text, hints and notices as events; whatever they
    hold is printed literally and no escape byte reaches the terminal."""
    from tui.headless import _Printer

    strings = MARKUP if family == "markup" else ESCAPES
    console, buf = plain_console()
    printer = _Printer(console, None, 1)
    for text in strings.values():
        printer(ev.GenerationStarted("p", "base", 0, f"model {text}"))
        printer(ev.TextDelta("p", "base", 0, text[:3]))
        printer(ev.TextDelta("p", "base", 0, text[3:]))
        printer(ev.GenerationDone("p", "base", 0, "g", text, "stop", 3, 0.1, 1))
        printer(ev.HintReady("p", f"hint {text}", "user"))
    out = buf.getvalue()
    assert not RAW_CONTROL.search(out), repr(out)
    for text in strings.values():
        assert printable(text) in out, (text, out)


# ----------------------------------------------------------------------------- markup and escapes in CLI output


def _import_file(tmp_path: Path, texts: dict[str, str]) -> Path:
    f = tmp_path / "weird.jsonl"
    lines = [json.dumps({"id": f"id {name} {text}", "prompt": f"prompt {text}", "condition": f"cond-{i}",
                         "text": f"answer tea {text}"}) for i, (name, text) in enumerate(texts.items())]
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f


@pytest.mark.parametrize("family", ["markup", "escapes"])
def test_data_commands_print_file_text_literally(tmp_path, family):
    strings = MARKUP if family == "markup" else ESCAPES
    db = tmp_path / "s.db"
    f = _import_file(tmp_path, strings)
    r = invoke("import", f, "--session", db)
    assert r.exit_code == 0, r.output
    with Session.open(db, create=False) as s:  # stored exactly as given
        assert sorted(p["text"] for p in s.prompts()) == sorted(f"prompt {t}" for t in strings.values())
    for args in (["search", db, "tea", "--limit", "100"], ["stats", db, "--reference", "cond-0"],
                 ["export", db, "--format", "md"], ["sessions", "--sessions-dir", tmp_path]):
        r = invoke(*args)
        assert r.exit_code == 0, (args, r.output)
        no_traceback(r)
        if args[0] in ("search", "export"):
            for text in strings.values():
                assert printable(text) in r.stdout, (args, text)
        if args[0] != "export" or family == "escapes":
            assert not RAW_CONTROL.search(r.stdout.replace("\r\n", "\n")), (args, repr(r.stdout))


def test_export_to_a_file_keeps_the_text_exact(tmp_path):
    """Neutralising is for the screen: a file written by export holds the bytes as stored."""
    db = tmp_path / "s.db"
    assert invoke("import", _import_file(tmp_path, ESCAPES), "--session", db).exit_code == 0
    out = tmp_path / "out.jsonl"
    r = invoke("export", db, "--format", "jsonl", "--output", out, "--all")
    assert r.exit_code == 0, r.output
    texts = {json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()}
    assert texts == {f"answer tea {t}" for t in ESCAPES.values()}


def test_export_to_a_terminal_neutralises_escapes(tmp_path, monkeypatch):
    """`overton export S` without --output prints to the terminal: escapes in answers must not
    run there (piped to a file or a program, the output stays exact: the test above)."""
    import tui.commands_data as data

    db = tmp_path / "s.db"
    assert invoke("import", _import_file(tmp_path, ESCAPES), "--session", db).exit_code == 0
    monkeypatch.setattr(data, "_stdout_is_terminal", lambda: True)
    for fmt in ("md", "csv", "jsonl", "json"):
        r = invoke("export", db, "--format", fmt, "--all")
        assert r.exit_code == 0, r.output
        assert not RAW_CONTROL.search(r.stdout.replace("\r\n", "\n")), (fmt, repr(r.stdout[:300]))
        assert "␛[31mred␛[0m" in r.stdout or "\\u001b[31mred\\u001b[0m" in r.stdout, fmt


@pytest.mark.parametrize("text", [*MARKUP.values(), *ESCAPES.values(), "not UTF-8 \udcff\udce9"])
def test_cli_errors_quote_user_text_literally(tmp_path, text):
    for args in (["run", "hi", "--models", text, "--sessions-dir", tmp_path],
                 ["stats", f"no such {text}", "--sessions-dir", tmp_path]):
        r = invoke(*args)
        no_traceback(r)
        assert r.exit_code in (1, 2), r.output
        assert "error:" in r.output
        assert not RAW_CONTROL.search(r.output), repr(r.output)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- prompts


WHITESPACE = ["", " ", "\t", "\n", " \r\n \t ", "\u00a0", "\u2003\u3000", "\u2028"]


@pytest.mark.parametrize("text", WHITESPACE)
def test_empty_or_whitespace_prompt_is_refused_everywhere(tiny_trio, tmp_path, text):
    with Session.open(tmp_path / "s.db") as s:
        wb = Workbench(tiny_trio, s, GenerationSettings(max_new_tokens=2))
        with pytest.raises(EmptyPrompt, match="empty"):
            wb.add_prompt(text)
        assert s.counts()["prompts"] == 0
    r = invoke("run", text, "--models", models_arg(tiny_trio), "--sessions-dir", tmp_path / "cli")
    assert r.exit_code == 2 and "the prompt is empty" in r.output, r.output
    no_traceback(r)
    assert not (tmp_path / "cli").exists()  # refused before any session file is made


def test_prompt_with_invalid_utf8_from_the_shell_is_refused(tiny_trio, tmp_path):
    """On POSIX, bytes that are not UTF-8 in argv arrive as lone surrogates ('\\udcff'); they
    cannot be tokenized or stored, so the prompt is refused with a message, not a traceback."""
    bad = b"caf\xe9 \xff?".decode("utf-8", "surrogateescape")
    r = invoke("run", bad, "--models", models_arg(tiny_trio), "--sessions-dir", tmp_path)
    no_traceback(r)
    assert r.exit_code == 2 and "not valid UTF-8" in r.output, r.output
    assert list(tmp_path.iterdir()) == []
    r = invoke("run", "fine", "--hint", bad, "--models", models_arg(tiny_trio), "--sessions-dir", tmp_path)
    assert r.exit_code == 2 and "not valid UTF-8" in r.output, r.output


PROMPT_FILES = {
    "latin-1": ("p.txt", "Caf\xe9 ou th\xe9 ?\n".encode("latin-1"), "not UTF-8"),
    "utf-16": ("p.txt", "Tea?\nCoffee?\n".encode("utf-16"), "not UTF-8"),
    "lone continuation": ("p.txt", b"ok\n\x80bad\n", "not UTF-8"),
    "truncated sequence": ("p.txt", b"ok\n\xe2\x82\n", "not UTF-8"),
    "empty": ("p.txt", b"", "holds no prompts"),
    "only blank lines": ("p.txt", b"\n \r\n\t\n", "holds no prompts"),
    "BOM only": ("p.txt", b"\xef\xbb\xbf", "holds no prompts"),
    "malformed JSONL": ("p.jsonl", b'{"prompt": "a"}\n{"prompt": \n', "p.jsonl:2: not valid JSON"),
    "JSONL wrong type": ("p.jsonl", b'{"prompt": 5}\n', "p.jsonl:1: needs a non-empty"),
    "JSONL duplicate id": ("p.jsonl", b'{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n',
                           "id 'a' already used on line 1"),
}


@pytest.mark.parametrize("case", list(PROMPT_FILES))
def test_bad_prompt_files_are_refused_with_the_line(tiny_trio, tmp_path, case):
    name, data, expected = PROMPT_FILES[case]
    f = tmp_path / name
    f.write_bytes(data)
    r = invoke("run", "--prompts", f, "--models", models_arg(tiny_trio), "--sessions-dir", tmp_path / "s")
    no_traceback(r)
    assert r.exit_code == 2, r.output
    assert expected in " ".join(r.output.split()), r.output
    assert not (tmp_path / "s").exists()


def test_prompt_file_with_bom_crlf_and_control_characters_is_read(tmp_path):
    from engine.prompt_file import read_prompts

    f = tmp_path / "p.txt"
    f.write_bytes(b"\xef\xbb\xbfFirst?\r\nSecond \x1b[31mred\x1b[0m?\r\n\r\n")
    assert [p.text for p in read_prompts(f)] == ["First?", "Second \x1b[31mred\x1b[0m?"]


QUERY = "Which tea should I drink on a cold evening, and why? " * 2
ANSWER_BUDGET = 32


def _tokens(folder, text: str) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(folder)(text).input_ids)


@pytest.fixture(scope="module")
def small_context_trio(tiny_trio, tmp_path_factory):
    """The tiny trio with a base model whose context holds QUERY zero-shot with its answer
    budget, and with one in-context example, but not with all three (same weights: only the
    configured context changes)."""
    from dataclasses import replace

    from engine.prompts import fixed_examples, urial_prompt

    examples = fixed_examples()
    zero = _tokens(tiny_trio.base.ref, urial_prompt(QUERY, []))
    one = _tokens(tiny_trio.base.ref, urial_prompt(QUERY, list(examples[-1:])))
    full = _tokens(tiny_trio.base.ref, urial_prompt(QUERY, list(examples)))
    assert zero < one < full
    context = one + ANSWER_BUDGET + 4
    folder = tmp_path_factory.mktemp("small-context") / "tiny-base-small"
    shutil.copytree(tiny_trio.base.ref, folder)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = context
    (folder / "config.json").write_text(json.dumps(config))
    trio = replace(tiny_trio, base=ModelSpec("tiny-base-small", "hf", str(folder), family="tiny-a"))
    return trio, context


def test_examples_are_dropped_with_the_numbers_when_the_prompt_no_longer_fits(small_context_trio, tmp_path):
    trio, context = small_context_trio
    seen: list = []
    settings = GenerationSettings(max_new_tokens=ANSWER_BUDGET, temperature=0)
    query = QUERY
    with Session.open(tmp_path / "s.db") as s:
        wb = Workbench(trio, s, settings, emit=seen.append)
        wb.load()
        pid = wb.add_prompt(query)
        assert wb.run_condition(pid, "icl") is True
        row = s.generations(pid, "icl")[0]
        meta = json.loads(row["meta_json"])
        assert (meta["examples"], meta["examples_dropped"]) == (1, 2)
        assert row["prompt_tokens"] + ANSWER_BUDGET <= context
        assert row["prompt_tokens"] + row["completion_tokens"] <= context
        notices = [e.message for e in seen if isinstance(e, ev.Notice)]
        assert any("2 of 3" in m and "examples dropped" in m and str(context) in m for m in notices), notices
        # Zero-shot, the same query fits with its whole answer budget.
        assert wb.run_condition(pid, "base") is True
        base = s.generations(pid, "base")[0]
        assert base["prompt_tokens"] + ANSWER_BUDGET <= context


def test_prompt_alone_too_long_is_refused_with_the_numbers(small_context_trio, tmp_path):
    trio, context = small_context_trio
    query = "tea " * (2 * context)
    assert _tokens(trio.base.ref, query) > context
    r = invoke("run", query, "--models", models_arg(trio), "--sessions-dir", tmp_path,
               "--session", "long", "--conditions", "base", "--max-new-tokens", "8")
    no_traceback(r)
    assert r.exit_code == 1, r.output
    message = " ".join(r.output.split())
    assert re.search(rf"error: .*\b\d{{3,}} tokens\b.*\b{context}\b", message), message
    assert not (tmp_path / "long.db").exists()  # refused before anything was stored: no empty session left


# ----------------------------------------------------------------------------- imported files: encodings, bad lines


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


GOOD = {"id": "g", "prompt": "Good?", "samples": ["fine"]}
GOOD_LINE = json.dumps(GOOD).encode()

INVALID_UTF8 = {
    "latin-1 é": "caf\xe9".encode("latin-1"),
    "lone continuation byte": b"\x80",
    "overlong slash": b"\xc0\xaf",
    "truncated 3-byte": b"\xe2\x82",
    "UTF-16 surrogate": b"\xed\xa0\x80",
    "0xff": b"\xff",
    "beyond U+10FFFF": b"\xf4\x90\x80\x80",
}


@pytest.mark.parametrize("name", list(INVALID_UTF8))
def test_invalid_utf8_lines_are_reported_with_their_number(tmp_path, name):
    bad = b'{"id": "x", "prompt": "P ' + INVALID_UTF8[name] + b'", "samples": ["a"]}'
    f = _write(tmp_path / "base.jsonl", b"\n".join([GOOD_LINE, bad, GOOD_LINE.replace(b'"g"', b'"h"')]) + b"\n")
    with Session.open(tmp_path / "s.db") as s:
        with pytest.raises(ImportFailed) as info:
            import_files(s, [f])
        assert [(b.line, "not valid UTF-8" in b.message) for b in info.value.bad_lines] == [(2, True)]
        assert s.counts()["generations"] == 0
        summary = import_files(s, [f], skip_bad=True)
        assert summary.generations_added == 2 and [b.line for b in summary.bad_lines] == [2]


def test_a_whole_latin1_file_reports_every_bad_line(tmp_path):
    lines = [json.dumps({"id": f"q{i}", "prompt": f"Caf\xe9 {i}?", "samples": ["th\xe9"]}, ensure_ascii=False)
             for i in range(3)]
    f = _write(tmp_path / "base.jsonl", "\r\n".join(lines).encode("latin-1"))
    parsed = parse_file(f)
    assert [b.line for b in parsed.bad] == [1, 2, 3]
    assert all("UTF-8" in b.message for b in parsed.bad)


def test_utf16_file_is_refused_with_one_clear_message(tmp_path):
    f = _write(tmp_path / "base.jsonl", (json.dumps(GOOD) + "\n").encode("utf-16"))
    parsed = parse_file(f)
    assert parsed.records == []
    assert [str(b) for b in parsed.bad] == [f"{f}: the file is UTF-16 encoded; save it as UTF-8"]


def test_mixed_bad_lines_are_each_reported_in_order_and_nothing_written(tmp_path):
    """One file with many kinds of trouble, a BOM and CRLF line ends: every bad line is named
    with its own number (the BOM and the CRs shift nothing)."""
    body = [
        GOOD_LINE,                                                        # 1
        b"",                                                              # 2 blank: fine
        b'{"id": "a", "prompt": "A", "samples": ["x"]',                   # 3 malformed
        b'{"id": "b", "samples": ["x"]}',                                 # 4 missing prompt
        b'{"id": "c", "prompt": "C", "samples": "x"}',                    # 5 wrong type
        b'{"id": "g", "prompt": "Good?", "samples": ["again"]}',          # 6 duplicate id
        b'{"id": "d", "prompt": "D", "samples": ["\xff"]}',               # 7 invalid UTF-8
        b'[1, 2]',                                                        # 8 not an object
        b'{"id": "e", "prompt": "E", "samples": ["ok \\u001b[2J \\u0000"]}',  # 9 fine: text as given
        b'\x00\x00',                                                      # 10 binary junk
    ]
    f = _write(tmp_path / "base.jsonl", b"\xef\xbb\xbf" + b"\r\n".join(body) + b"\r\n")
    db = tmp_path / "s.db"
    r = invoke("import", f, "--session", db)
    no_traceback(r)
    assert r.exit_code == 1
    reported = [int(m) for m in re.findall(rf"{re.escape(str(f))}:(\d+):", r.stderr)]
    assert reported == [3, 4, 5, 6, 7, 8, 10], r.stderr
    assert "nothing was imported" in r.stderr
    assert not db.exists()
    r = invoke("import", f, "--session", db, "--skip-bad")
    assert r.exit_code == 0, r.output
    with Session.open(db, create=False) as s:
        texts = sorted(g["text"] for g in s.generations())
        assert texts == ["fine", "ok \x1b[2J \x00"]


def test_an_import_that_fails_while_writing_leaves_nothing(tmp_path, monkeypatch):
    """All-or-nothing is one transaction: prompts already inserted are rolled back when a later
    write of the same import fails."""
    f = _write(tmp_path / "base.jsonl", b"\n".join([GOOD_LINE, b'{"id": "n", "prompt": "New", "samples": ["y"]}']))
    with Session.open(tmp_path / "s.db") as s:
        s.add_prompt("kept", external_id="old")
        before = (s.counts(), [p["text"] for p in s.prompts()])

        def disk_full(rows):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(s, "add_generations_bulk", disk_full)
        with pytest.raises(sqlite3.OperationalError):
            import_files(s, [f])
        assert (s.counts(), [p["text"] for p in s.prompts()]) == before
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ----------------------------------------------------------------------------- session files


def _session_file(path: Path, prompts: int = 40) -> Path:
    with Session.open(path) as s:
        for i in range(prompts):
            pid = s.add_prompt(f"prompt {i} " + "x" * 300)
            s.add_generation(pid, condition="base", text="answer " * 50, finish_reason="stop")
    return path


def _corrupt_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    assert len(data) >= 6 * page
    data[3 * page: 4 * page] = b"\xa5" * page  # a b-tree page in the middle of the file
    path.write_bytes(bytes(data))


def _newer(path: Path) -> None:
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    raw.execute("PRAGMA journal_mode = delete")
    raw.commit()
    raw.close()


def _foreign(path: Path) -> None:
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE responses (id INTEGER PRIMARY KEY, body TEXT)")
    raw.execute("INSERT INTO responses (body) VALUES ('hello')")
    raw.commit()
    raw.close()


BAD_SESSION_FILES = {
    "text file": (lambda p: p.write_text("my notes, not a database\n" * 50), "not a SQLite database"),
    "zip archive": (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8), "not a SQLite database"),
    "random bytes": (lambda p: p.write_bytes(hashlib.sha512(b"x").digest() * 200), "not a SQLite database"),
    "header only": (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x00" * 10), "truncated"),
    "cut in half": (lambda p: p.write_bytes(_session_file(p).read_bytes()[: len(p.read_bytes()) // 2 // 4096 * 4096]),
                    "damaged"),
    "corrupted page": (lambda p: _corrupt_page(_session_file(p)), "damaged"),
    "newer schema": (lambda p: _newer(_session_file(p, 2)), "newer overton"),
    "foreign database": (_foreign, "not an overton session"),
}

COMMANDS = {
    "app": lambda db, trio: ["--session", db, "--models", models_arg(trio)],
    "run": lambda db, trio: ["run", "hi", "--session", db, "--models", models_arg(trio), "--conditions", "base"],
    "import": lambda db, trio: ["import", db.parent / "in.jsonl", "--session", db],
    "stats": lambda db, trio: ["stats", db],
    "export": lambda db, trio: ["export", db, "--format", "csv", "--output", db.parent / "out.csv"],
    "search": lambda db, trio: ["search", db, "tea"],
}


@pytest.mark.parametrize("case", list(BAD_SESSION_FILES))
def test_bad_session_files_are_refused_untouched_by_every_command(tiny_trio, tmp_path, case):
    make, expected = BAD_SESSION_FILES[case]
    db = tmp_path / "s.db"
    make(db)
    (tmp_path / "in.jsonl").write_bytes(GOOD_LINE + b"\n")
    before = sha(db)
    with pytest.raises(SessionError, match=expected):
        Session.open(db)
    for name, args in COMMANDS.items():
        r = invoke(*args(db, tiny_trio))
        no_traceback(r)
        assert r.exit_code == 1, (name, r.output)
        assert expected in " ".join(r.output.split()), (name, r.output)
        assert sha(db) == before, name
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "s.db"], name  # no -wal, -shm, out.csv


SESSION_NAMES = {
    "slash": "a/b",
    "parent": "..",
    "dot": ".",
    "parent escape": "../escape",
    "deep parent": "x/../../y",
    "absolute": "/etc/passwd",
    "backslash": "a\\b",
    "windows parent": "..\\..\\evil",
    "NUL": "a\x00b",
    "newline": "a\nb",
    "CON": "CON",
    "nul device": "nul",
    "COM1": "COM1",
    "lpt9 with suffix": "lpt9.db",
    "AUX.txt": "AUX.txt",
    "colon": "a:b",
    "star": "a*b",
    "question": "a?b",
    "quote": 'a"b',
    "less": "a<b",
    "greater": "a>b",
    "pipe": "a|b",
    "trailing dot": "name.",
    "trailing space": "name ",
    "hidden": ".hidden",
    "empty": "",
    "spaces": "   ",
    "too long": "n" * 300,
}


@pytest.mark.parametrize("case", list(SESSION_NAMES))
def test_session_names_never_land_outside_the_sessions_dir(tmp_path, monkeypatch, case):
    name = SESSION_NAMES[case]
    sessions = tmp_path / "sessions"
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    try:
        path = resolve_session_path(name, sessions)
    except SessionError as exc:
        assert str(exc) and "\x00" not in printable(str(exc))
        path = None
    if path is not None and "/" in name:
        assert path == Path(name) and path.exists()  # an existing file, named by its path: the user's choice
    elif path is not None:  # a bare name: a plain file inside the sessions dir
        assert path.resolve().parent == sessions.resolve(), path
        stem = path.name.split(".")[0].upper()
        assert stem not in {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                            *(f"LPT{i}" for i in range(1, 10))}, path
        assert not path.name.endswith((" ", ".")) and not path.name.startswith(".")
    r = invoke("import", tmp_path / "missing.jsonl", "--session", name, "--sessions-dir", sessions)
    no_traceback(r)
    # Nothing was created anywhere but (at most) the sessions dir.
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) in (["work"], ["sessions", "work"])


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("option, expected", [
    ("nosuch", "unknown model trio 'nosuch'; known trios: default, llama2"),
    ("llama3", "unknown model trio 'llama3'"),
    ("bse=/x", "unknown role 'bse'"),
    ("base=", "empty model for base"),
    ("base=/no/such/folder", "no model folder at /no/such/folder"),
    ("base=./relative/missing", "no model folder at ./relative/missing"),
])
def test_unknown_model_or_trio_names_the_problem(tmp_path, option, expected):
    with pytest.raises(ModelUnavailable, match=re.escape(expected)):
        source_path(parse_models(option).base)
    r = invoke("run", "hi", "--models", option, "--sessions-dir", tmp_path)
    no_traceback(r)
    assert r.exit_code == 2 and expected in " ".join(r.output.split()), r.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec", [GEMMA_BASE, SMOL_INSTRUCT, MINILM], ids=lambda s: s.ref)
def test_model_package_not_installed_gives_the_exact_install_command(tmp_path, monkeypatch, spec):
    from engine import models

    real = models._package_dir
    monkeypatch.setattr(models, "_package_dir", lambda package: None if package == spec.ref else real(package))
    with pytest.raises(ModelUnavailable) as info:
        source_path(spec)
    assert f"Install it with:\n  {spec.install}" in str(info.value)
    r = invoke("models")
    squeezed = re.sub(r"[\s│┃|]", "", r.output)
    assert r.exit_code == 0 and re.sub(r"\s", "", spec.install) in squeezed, r.output
    r = invoke("run", "hi", "--sessions-dir", tmp_path)  # the default trio
    no_traceback(r)
    assert r.exit_code == 1 and spec.install in r.output, r.output
    assert list(tmp_path.iterdir()) == []


def test_a_model_folder_without_weights_is_a_clear_error(tiny_trio, tmp_path):
    broken = tmp_path / "half-copied"
    broken.mkdir()
    shutil.copy(Path(tiny_trio.base.ref) / "config.json", broken / "config.json")
    r = invoke("run", "hi", "--models", f"base={broken},aligned={tiny_trio.aligned.ref}",
               "--sessions-dir", tmp_path / "s", "--conditions", "base")
    no_traceback(r)
    assert r.exit_code == 1 and "half-copied" in r.output and "error:" in r.output, r.output


class _Interrupted(BaseException):
    pass


@pytest.fixture
def fake_gguf(tiny_trio, tmp_path, monkeypatch):
    """A packaged-GGUF spec whose 'conversion' loads the tiny model (the conversion machinery
    around it, temporary folder, marker and rename, is the real one)."""
    import transformers

    from engine import convert

    monkeypatch.setenv("OVERTON_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "pkg" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(convert, "source_path", lambda spec: gguf)
    calls = {"n": 0, "fail": False}
    real_model = transformers.AutoModelForCausalLM.from_pretrained
    real_tok = transformers.AutoTokenizer.from_pretrained

    def model(*args, **kw):
        calls["n"] += 1
        if calls["fail"]:
            raise _Interrupted()
        return real_model(tiny_trio.base.ref)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: real_tok(tiny_trio.base.ref))
    spec = ModelSpec("fake", "gguf-package", "overton-fake-gguf-pkg", locator="model.gguf")
    return spec, calls


def test_a_half_written_model_cache_is_detected_and_rebuilt(fake_gguf):
    from transformers import AutoConfig

    from engine.convert import MARKER, _folder_for, cached_folder, ensure_converted

    spec, calls = fake_gguf
    target = _folder_for(spec)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{\"truncated")  # a conversion killed while saving
    stale = target.with_name(target.name + ".partial")
    stale.mkdir()
    (stale / "junk").write_text("x")
    assert cached_folder(spec) is None  # no marker: not a usable cache
    messages: list[str] = []
    folder = ensure_converted(spec, lambda msg, frac: messages.append(msg))
    assert folder == target and (folder / MARKER).exists() and calls["n"] == 1
    assert any("half-written" in m for m in messages), messages
    assert not stale.exists()
    assert AutoConfig.from_pretrained(folder).hidden_size == 32  # a complete, loadable folder
    assert ensure_converted(spec) == folder and calls["n"] == 1  # cached: not converted again


def test_an_interrupted_conversion_leaves_nothing_half_written(fake_gguf):
    from engine.convert import _folder_for, cached_folder, ensure_converted

    spec, calls = fake_gguf
    calls["fail"] = True
    with pytest.raises(_Interrupted):
        ensure_converted(spec)
    target = _folder_for(spec)
    assert not target.exists() and not target.with_name(target.name + ".partial").exists()
    assert cached_folder(spec) is None
    calls["fail"] = False
    assert cached_folder(spec) is None and ensure_converted(spec) == target


# ----------------------------------------------------------------------------- chat templates


MALICIOUS_TEMPLATES = {
    "mro walk": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler globals": "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",
    "joiner globals": "{% for m in messages %}{{ joiner.__init__.__globals__ }}{% endfor %}",
    "format string": "{{ '{0.__class__}'.format(messages) }}",
}


@pytest.mark.parametrize("name", list(MALICIOUS_TEMPLATES))
def test_chat_templates_render_in_a_sandbox(tiny_trio, name):
    """transformers renders chat templates in Jinja's ImmutableSandboxedEnvironment: reaching
    Python internals either raises SecurityError or renders as an empty undefined value."""
    from jinja2.exceptions import SecurityError
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_trio.aligned.ref)
    tok.chat_template = MALICIOUS_TEMPLATES[name]
    try:
        out = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    except SecurityError:
        return
    assert not re.search(r"class|function|module|built-in|object at", out), out


@pytest.fixture(scope="module")
def evil_aligned(tiny_trio, tmp_path_factory):
    folder = tmp_path_factory.mktemp("evil") / "tiny-chat-evil"
    shutil.copytree(tiny_trio.aligned.ref, folder)
    template = MALICIOUS_TEMPLATES["cycler globals"] + "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    for f in folder.glob("chat_template.*"):
        f.unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_a_malicious_chat_template_is_refused_with_a_message(tiny_trio, evil_aligned, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("run", "hi", "--models", f"base={tiny_trio.base.ref},aligned={evil_aligned}",
               "--sessions-dir", tmp_path / "s", "--session", "evil", "--conditions", "aligned",
               "--max-new-tokens", "2")
    no_traceback(r)
    assert r.exit_code == 1, r.output
    message = " ".join(r.output.split())
    assert "chat template" in message and "sandbox" in message, message
    assert not (tmp_path / "PWNED").exists()
    with Session.open(tmp_path / "s" / "evil.db", create=False) as s:
        assert s.counts()["generations"] == 0  # nothing half-made was stored


# ----------------------------------------------------------------------------- control characters in prompts


@pytest.mark.parametrize("name", ["CSI colour", "OSC title", "C1 CSI", "NUL", "CR overwrite"])
def test_prompts_with_control_characters_are_stored_exactly_and_printed_safely(tiny_trio, tmp_path, name):
    text = f"Why is the sky {ESCAPES[name]} blue?"
    r = invoke("run", text, "--models", models_arg(tiny_trio), "--sessions-dir", tmp_path, "--session", "c",
               "--conditions", "base", "--max-new-tokens", "3")
    assert r.exit_code == 0, r.output
    assert not RAW_CONTROL.search(r.output), repr(r.output)
    assert printable(text) in r.output
    with Session.open(tmp_path / "c.db", create=False) as s:
        assert [p["text"] for p in s.prompts()] == [text]
        assert len(s.generations()) == 1


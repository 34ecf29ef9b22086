"""`overton import` and engine.importer: line forms, matching, re-import, bad lines, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.importer import ImportFailed, default_condition, import_files, parse_files
from engine.session import Session
from tui.cli import app

FENCED = "Rest and fluids.\n```"  # as the reference samples keep their stop fence


def write(path: Path, lines, bom: bool = False, crlf: bool = False) -> Path:
    """Lines are dicts (dumped as JSON) or raw strings (written as they are)."""
    text = [line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines]
    sep = "\r\n" if crlf else "\n"
    data = (sep.join(text) + sep).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def snapshot(s: Session) -> tuple:
    return (s.counts(), [(p["external_id"], p["text"]) for p in s.prompts()],
            sorted((g["condition"], g["sample_index"], g["text"]) for g in s.generations()))


def latest(s: Session, external_id: str, condition: str) -> list[str]:
    pid = s.find_prompt(external_id)["id"]
    return [r["text"] for r in s.latest_batches(pid).get((pid, condition), {}).values()]


@pytest.fixture
def session(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        yield s


# --------------------------------------------------------------------------- line forms


def test_samples_form_stored_exactly(tmp_path, session):
    f = write(tmp_path / "llama-2-base.jsonl", [
        {"id": "p0", "prompt": "What medicine?", "samples": [FENCED, "  spaced  \n", ""]},
        {"id": "p1", "prompt": "Why?", "samples": ["Because.\n```"], "model": "meta-llama/Llama-2-7b-hf"},
    ])
    summary = import_files(session, [f])
    assert (summary.prompts_added, summary.prompts_matched) == (2, 0)
    assert (summary.generations_added, summary.generations_skipped, summary.hints_added) == (4, 0, 0)
    assert summary.bad_lines == []
    p0 = session.find_prompt("p0")
    assert p0["text"] == "What medicine?"
    rows = session.generations(p0["id"])
    assert [(g["condition"], g["sample_index"], g["text"], g["raw_text"]) for g in rows] == [
        ("llama-2-base", 0, FENCED, FENCED), ("llama-2-base", 1, "  spaced  \n", "  spaced  \n"),
        ("llama-2-base", 2, "", ""),
    ]
    g = rows[0]
    assert g["source"] == "imported" and g["finish_reason"] == "imported" and g["backend"] == "import"
    assert g["model_id"] == g["model_name"] == "llama-2-base"  # no "model" key: the condition
    assert g["settings"] == {} and g["meta"] == {"file": "llama-2-base.jsonl", "line": 1}
    g1 = session.generations(session.find_prompt("p1")["id"])[0]
    assert g1["model_id"] == g1["model_name"] == "meta-llama/Llama-2-7b-hf"
    assert g1["meta"] == {"file": "llama-2-base.jsonl", "line": 2}


def test_one_sample_a_line_form(tmp_path, session):
    f = write(tmp_path / "mixed.jsonl", [
        {"id": "q1", "prompt": "Q one", "condition": "base", "text": "b0"},
        {"id": "q1", "prompt": "Q one", "condition": "aligned", "text": "a0"},
        {"id": "q2", "prompt": "Q two", "condition": "base", "text": "c0"},
        {"id": "q1", "prompt": "Q one", "condition": "base", "text": "b1"},
        {"id": 7, "prompt": "Q seven", "text": "no condition: the stem"},
        {"id": "q1", "prompt": "Q one", "condition": "base", "text": "b2"},
    ])
    summary = import_files(session, [f])
    assert summary.generations_added == 6 and summary.prompts_added == 3
    q1 = session.find_prompt("q1")["id"]
    rows = session.generations(q1, condition="base")
    assert [(g["sample_index"], g["text"], g["meta"]["line"]) for g in rows] == [(0, "b0", 1), (1, "b1", 4), (2, "b2", 6)]
    assert [g["text"] for g in session.generations(q1, condition="aligned")] == ["a0"]
    assert latest(session, "7", "mixed") == ["no condition: the stem"]  # integer id -> "7"
    assert {c for f_ in summary.files for c in f_.conditions} == {"base", "aligned", "mixed"}


def test_condition_default_from_stem():
    assert default_condition(Path("dir/llama-2-base.jsonl")) == "llama-2-base"
    assert default_condition(Path("x.hints.jsonl")) == "x"
    assert default_condition(Path("run.v2.jsonl")) == "run.v2"


def test_condition_option_overrides(tmp_path, session):
    f = write(tmp_path / "llama-2-base.jsonl", [{"id": "p0", "prompt": "P", "samples": ["s"]}])
    g = write(tmp_path / "lines.jsonl", [{"id": "p0", "prompt": "P", "condition": "aligned", "text": "t"}])
    import_files(session, [f, g], condition="base")
    pid = session.find_prompt("p0")["id"]
    assert sorted(x["condition"] for x in session.generations(pid)) == ["base", "base"]
    with pytest.raises(ImportFailed, match="reserved"):
        parse_files([f], condition="summary")


def test_hints_file(tmp_path, session):
    samples = write(tmp_path / "cond.jsonl", [{"id": "h1", "prompt": "P1", "samples": ["x"]}])
    hints = write(tmp_path / "cond.hints.jsonl", [
        {"id": "h1", "prompt": "P1", "hint": "Summary one."},
        {"id": "h2", "prompt": "P2", "hint": "Summary two."},  # a prompt not seen before: created
    ])
    summary = import_files(session, [samples, hints])
    assert summary.hints_added == 2 and summary.prompts_added == 2
    h1 = session.find_prompt("h1")["id"]
    assert [(h["text"], h["source"]) for h in session.hints(h1)] == [("Summary one.", "imported")]
    assert session.latest_hint(session.find_prompt("h2")["id"])["text"] == "Summary two."
    assert [g["condition"] for g in session.generations()] == ["cond"]  # hints are not samples
    again = import_files(session, [hints])
    assert (again.hints_added, again.hints_skipped) == (0, 2)
    assert session.counts()["hints"] == 2


def test_prompts_matched_by_id(tmp_path, session):
    pid = session.add_prompt("Known prompt", external_id="k1")
    other = session.add_prompt("Known prompt")  # same text, no id: not matched
    f = write(tmp_path / "base.jsonl", [{"id": "k1", "prompt": "Known prompt", "samples": ["a", "b"]},
                                        {"id": "k2", "prompt": "New prompt", "samples": ["c"]}])
    summary = import_files(session, [f])
    assert (summary.prompts_added, summary.prompts_matched) == (1, 1)
    assert [g["text"] for g in session.generations(pid)] == ["a", "b"]
    assert session.generations(other) == []
    assert session.counts()["prompts"] == 3


def test_same_id_different_prompt_is_a_bad_line(tmp_path, session):
    session.add_prompt("Original text", external_id="k1")
    before = snapshot(session)
    f = write(tmp_path / "base.jsonl", [{"id": "k2", "prompt": "Fine", "samples": ["ok"]},
                                        {"id": "k1", "prompt": "Another text", "samples": ["x"]}])
    with pytest.raises(ImportFailed) as info:
        import_files(session, [f])
    [bad] = info.value.bad_lines
    assert bad.line == 2 and "different prompt" in bad.message and str(f) in str(bad)
    assert snapshot(session) == before  # all or nothing
    summary = import_files(session, [f], skip_bad=True)
    assert summary.generations_added == 1 and [b.line for b in summary.bad_lines] == [2]
    assert session.generations(session.find_prompt("k1")["id"]) == []


# --------------------------------------------------------------------------- re-import


def test_reimport_does_not_duplicate(tmp_path, session):
    f = write(tmp_path / "base.jsonl", [{"id": "p", "prompt": "P", "samples": ["s0", "s1", "s2"]},
                                        {"id": "q", "prompt": "Q", "samples": ["t0"]}])
    import_files(session, [f])
    again = import_files(session, [f])
    assert (again.generations_added, again.generations_skipped) == (0, 4)
    assert (again.prompts_added, again.prompts_matched) == (0, 2)
    assert session.counts()["generations"] == 4

    # more samples for the same prompt: only the new ones are appended to the batch
    write(f, [{"id": "p", "prompt": "P", "samples": ["s0", "s1", "s2", "s3", "s4"]}])
    more = import_files(session, [f])
    assert (more.generations_added, more.generations_skipped) == (2, 3)
    assert latest(session, "p", "base") == ["s0", "s1", "s2", "s3", "s4"]

    # a changed sample 0: a new batch, which is then the one the metrics use
    write(f, [{"id": "p", "prompt": "P", "samples": ["new0", "new1"]}])
    changed = import_files(session, [f])
    assert (changed.generations_added, changed.generations_skipped) == (2, 0)
    assert latest(session, "p", "base") == ["new0", "new1"]
    assert session.counts()["generations"] == 8


def test_reimport_one_sample_a_line_form(tmp_path, session):
    lines = [{"id": "p", "prompt": "P", "condition": "c", "text": t} for t in ("a", "b", "c")]
    f = write(tmp_path / "x.jsonl", lines)
    import_files(session, [f])
    again = import_files(session, [f])
    assert (again.generations_added, again.generations_skipped) == (0, 3)


def test_bulk_batch_keeps_its_order(tmp_path, session):
    n = 60  # written within one millisecond: the ids must keep the order
    f = write(tmp_path / "c.jsonl", [{"id": "p", "prompt": "P", "samples": [f"s{i}" for i in range(n)]}])
    import_files(session, [f])
    assert latest(session, "p", "c") == [f"s{i}" for i in range(n)]


# --------------------------------------------------------------------------- bad lines

GOOD = {"id": "g", "prompt": "Good", "samples": ["fine"]}

BAD_LINES = {
    "malformed JSON": ('{"id": "x", "prompt": "P", "samples": ["a"', "malformed JSON"),
    "not an object": ('["x", "P"]', "expected a JSON object"),
    "missing id": ({"prompt": "P", "samples": ["a"]}, "missing key 'id'"),
    "missing prompt": ({"id": "x", "samples": ["a"]}, "missing key 'prompt'"),
    "no samples/text/hint": ({"id": "x", "prompt": "P"}, "'samples'"),
    "samples not a list": ({"id": "x", "prompt": "P", "samples": "abc"}, "list of strings"),
    "samples item not a string": ({"id": "x", "prompt": "P", "samples": ["a", 3]}, "item 1"),
    "samples empty": ({"id": "x", "prompt": "P", "samples": []}, "empty list"),
    "id wrong type": ({"id": ["x"], "prompt": "P", "samples": ["a"]}, "'id' must be"),
    "id bool": ({"id": True, "prompt": "P", "samples": ["a"]}, "'id' must be"),
    "prompt not a string": ({"id": "x", "prompt": 5, "samples": ["a"]}, "'prompt' must be a string"),
    "prompt empty": ({"id": "x", "prompt": "  ", "samples": ["a"]}, "'prompt' is empty"),
    "text not a string": ({"id": "x", "prompt": "P", "condition": "c", "text": None}, "'text' must be a string"),
    "condition not a string": ({"id": "x", "prompt": "P", "condition": 1, "text": "t"}, "'condition' must be"),
    "reserved condition": ({"id": "x", "prompt": "P", "condition": "summary", "text": "t"}, "reserved"),
    "hint empty": ({"id": "x", "prompt": "P", "hint": ""}, "'hint' is empty"),
    "two forms": ({"id": "x", "prompt": "P", "samples": ["a"], "hint": "h"}, "'samples' and 'hint'"),
    "model not a string": ({"id": "x", "prompt": "P", "samples": ["a"], "model": 3}, "'model'"),
    "duplicate id": ({"id": "g", "prompt": "Good", "samples": ["again"]}, "duplicate id 'g': already on line 1"),
    "same id, other prompt": ({"id": "g", "prompt": "Other", "condition": "z", "text": "t"}, "different prompt"),
    "invalid UTF-8": (b'{"id": "x", "prompt": "\xff", "samples": ["a"]}', "not valid UTF-8"),
}


@pytest.mark.parametrize("family", list(BAD_LINES))
def test_bad_line_reported_with_its_number_and_nothing_written(tmp_path, session, family):
    bad, expected = BAD_LINES[family]
    f = tmp_path / "c.jsonl"
    body = [json.dumps(GOOD).encode(), b"", bad if isinstance(bad, bytes) else
            (bad if isinstance(bad, str) else json.dumps(bad)).encode(), json.dumps(
                {"id": "h", "prompt": "H", "samples": ["ok"]}).encode()]
    f.write_bytes(b"\n".join(body) + b"\n")
    before = snapshot(session)
    with pytest.raises(ImportFailed) as info:
        import_files(session, [f])
    assert [(b.line, expected in b.message) for b in info.value.bad_lines] == [(3, True)], info.value.bad_lines
    assert str(info.value.bad_lines[0]).startswith(f"{f}:3: ")
    assert "nothing was imported" in str(info.value)
    assert snapshot(session) == before

    summary = import_files(session, [f], skip_bad=True)  # the good lines 1 and 4 go in
    assert summary.generations_added == 2 and [b.line for b in summary.bad_lines] == [3]


def test_empty_file(tmp_path, session):
    for content in (b"", b"\n\n  \n", b"\xef\xbb\xbf"):
        f = tmp_path / "empty.jsonl"
        f.write_bytes(content)
        with pytest.raises(ImportFailed) as info:
            import_files(session, [f])
        assert "empty" in info.value.bad_lines[0].message
    assert session.counts()["prompts"] == 0


def test_all_or_nothing_across_files(tmp_path, session):
    import_files(session, [write(tmp_path / "base.jsonl", [{"id": "p", "prompt": "P", "samples": ["x"]}])])
    before = snapshot(session)
    good = write(tmp_path / "aligned.jsonl", [{"id": "p", "prompt": "P", "samples": ["y"]},
                                              {"id": "q", "prompt": "Q", "samples": ["z"]}])
    bad = write(tmp_path / "hinted.jsonl", [{"id": "q", "prompt": "Q", "samples": ["w"]}, "{oops"])
    with pytest.raises(ImportFailed) as info:
        import_files(session, [good, bad])
    assert [(b.file, b.line) for b in info.value.bad_lines] == [(str(bad), 2)]
    assert snapshot(session) == before


def test_missing_file(tmp_path, session):
    with pytest.raises(ImportFailed, match="no such file"):
        import_files(session, [tmp_path / "nope.jsonl"])
    with pytest.raises(ImportFailed, match="directory"):
        import_files(session, [tmp_path])


def test_bom_and_crlf(tmp_path, session):
    f = write(tmp_path / "base.jsonl", [{"id": "p", "prompt": "P", "samples": ["line1\r\nline2", "é ünïcode ✓"]},
                                        {"id": "q", "prompt": "Q", "samples": ["z"]}], bom=True, crlf=True)
    assert f.read_bytes().startswith(b"\xef\xbb\xbf{") and b"\r\n" in f.read_bytes()
    summary = import_files(session, [f])
    assert summary.generations_added == 3 and summary.bad_lines == []
    assert latest(session, "p", "base") == ["line1\r\nline2", "é ünïcode ✓"]  # texts untouched


# --------------------------------------------------------------------------- CLI


def test_cli_import_and_reimport(tmp_path):
    f = write(tmp_path / "llama-2-base.jsonl", [{"id": "p", "prompt": "[bold]P[/bold]", "samples": ["[red]x[/red]", "y"]}])
    h = write(tmp_path / "llama-2-base.hints.jsonl", [{"id": "p", "prompt": "[bold]P[/bold]", "hint": "h"}])
    db = tmp_path / "out" / "s.db"
    r = CliRunner().invoke(app, ["import", str(f), str(h), "--session", str(db)])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "2 samples added" in out and "1 hints added" in out and "[bold]" not in out  # file names only
    r = CliRunner().invoke(app, ["import", str(f), "--session", str(db)])
    assert r.exit_code == 0 and "0 samples added, 2 already there" in " ".join(r.stdout.split())
    with Session.open(db, create=False) as s:
        assert s.counts()["generations"] == 2
        assert s.find_prompt("p")["text"] == "[bold]P[/bold]"


def test_cli_import_by_session_name(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERTON_SESSIONS_DIR", str(tmp_path / "sessions"))
    f = write(tmp_path / "c.jsonl", [GOOD])
    r = CliRunner().invoke(app, ["import", str(f), "--session", "pilot", "--condition", "aligned"])
    assert r.exit_code == 0, r.output
    with Session.open(tmp_path / "sessions" / "pilot.db", create=False) as s:
        assert [g["condition"] for g in s.generations()] == ["aligned"]


def test_cli_errors_write_nothing(tmp_path):
    db = tmp_path / "new.db"
    runner = CliRunner()
    r = runner.invoke(app, ["import", str(tmp_path / "missing.jsonl"), "--session", str(db)])
    assert r.exit_code == 1 and "no such file" in r.stderr and "Traceback" not in r.output
    assert not db.exists()

    f = write(tmp_path / "c.jsonl", [GOOD, "not json", {"id": "x", "prompt": "P"}])
    r = runner.invoke(app, ["import", str(f), "--session", str(db)])
    assert r.exit_code == 1, r.output
    assert f"{f}:2: malformed JSON" in r.stderr and f"{f}:3: missing key" in " ".join(r.stderr.split())
    assert "nothing was imported" in r.stderr and r.stdout == ""
    assert not db.exists()

    r = runner.invoke(app, ["import", str(f), "--session", str(db), "--skip-bad"])
    assert r.exit_code == 0, r.output
    assert "skipped 2 bad lines" in r.stderr
    with Session.open(db, create=False) as s:
        assert s.counts()["generations"] == 1

    r = runner.invoke(app, ["import", str(write(tmp_path / "g.jsonl", [GOOD])), "--session", "bad:name"])
    assert r.exit_code == 1 and "reserved characters" in r.stderr


def test_cli_failed_import_into_new_session_leaves_no_file(tmp_path, monkeypatch):
    # A failure found only while writing (here: simulated) must not leave a new empty session behind.
    import engine.importer as importer

    def boom(*a, **k):
        raise importer.ImportFailed("simulated", [importer.BadLine("f", 1, "simulated")])

    monkeypatch.setattr(importer, "import_parsed", boom)
    db = tmp_path / "fresh.db"
    r = CliRunner().invoke(app, ["import", str(write(tmp_path / "c.jsonl", [GOOD])), "--session", str(db)])
    assert r.exit_code == 1 and "simulated" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]

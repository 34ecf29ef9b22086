"""engine.export and `overton export`: golden files for every format, values checked against
what was entered, CSV formula injection, atomic writes and user errors.

The golden files are tests/golden/export.{csv,summary.csv,agreement.csv,json,jsonl,md}, made
from the hand-built session below (fixed ids and times; annotation ids and times are not
exported). After a deliberate change of the export, regenerate them with

    OVERTON_UPDATE_GOLDEN=1 python -m pytest -q tests/test_export.py

and review the diff (``git diff tests/golden``) before committing.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import export as ex
from engine.annotations import Annotations
from engine.session import Session
from tui.cli import app

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("OVERTON_UPDATE_GOLDEN") == "1"

INJECTION = "=cmd|' /C calc'!A0"
TRICKY = 'Say "hello", then\nleave, [bold]now[/bold]'
RICH_NOTE = "=HYPERLINK(\"http://x\")\nsecond line, with [red]markup[/red]"


def stamp(n: int) -> str:
    return f"2025-01-01T00:{n // 60:02d}:{n % 60:02d}.000+00:00"


def build(path: Path) -> Session:
    """Three prompts; conditions base, icl, hinted, aligned (the reference); P1 has an older,
    annotated base batch and a cancelled answer; P3 has no aligned answer."""
    s = Session.open(path)
    s.add_prompt(INJECTION, external_id="inj", id="P1", created_at=stamp(0))
    s.add_prompt("+1", external_id="@SUM(1)", id="P2", created_at=stamp(1))
    s.add_prompt(TRICKY, external_id="tricky", id="P3", created_at=stamp(2))
    n = [10]

    def add(pid, cond, texts, finish="stop", model="tiny-model"):
        for i, text in enumerate(texts):
            s.add_generation(pid, id=f"{pid}-{cond}-{n[0]}", condition=cond, sample_index=i, text=text,
                             created_at=stamp(n[0]), finish_reason=finish, model_name=model)
            n[0] += 1

    add("P1", "base", ["old alpha answer"])  # an older batch, replaced below
    add("P1", "aligned", ["alpha bravo charlie delta", "alpha bravo echo"])
    add("P1", "base", ["+1 alpha bravo", "-2 zulu"])
    add("P1", "icl", ["yankee", "xray"])  # no overlap: similarity 0, a negative gap closed
    add("P1", "hinted", ["alpha bravo charlie", "@SUM(1) alpha, \"quoted\"\nnext line"])
    add("P1", "hinted", ["zulu cancelled"], finish="cancelled")  # sample 0 again: a new batch...
    add("P1", "hinted", ["alpha bravo charlie", "@SUM(1) alpha, \"quoted\"\nnext line"])  # ...re-run
    s.add_generation("P1", id="P1-summary", condition="summary", text="hint text", created_at=stamp(40))
    add("P2", "aligned", ["golf hotel", "golf india"])
    add("P2", "base", ["golf", "\tkilo"])
    add("P2", "icl", ["lima"])
    add("P2", "hinted", ["golf hotel ```code``` [bold]x[/bold]"])
    add("P3", "base", ["-3", "answer with ````four backticks````"], model=None)
    add("P3", "hinted", ["=1+1"])

    # ids: P1 base 10 (old batch) 13 14, aligned 11 12, icl 15 16, hinted 17 18 (old batch),
    # 19 (cancelled), 20 21 (newest); P2 aligned 22 23, base 24 25, icl 26, hinted 27;
    # P3 base 28 29, hinted 30
    alice, bob = Annotations(s, "alice"), Annotations(s, "bob")
    alice.set_rating("P1-base-14", 4)
    bob.set_rating("P1-base-14", 3)
    alice.toggle_label("P1-base-14", "helpful")
    bob.toggle_label("P1-base-14", "helpful")
    bob.toggle_label("P1-base-14", "repetitive")
    alice.set_note("P1-hinted-21", RICH_NOTE)
    alice.set_rating("P1-hinted-17", 5)  # on the replaced hinted batch: exported, outside the stats
    bob.set_rating("P1-hinted-17", 5)
    alice.set_preference("P1", "hinted")
    bob.set_preference("P1", "tie")
    alice.toggle_label("P1-base-10", "off-topic")  # on the older base batch
    alice.set_rating("P2-aligned-22", 2)
    alice.set_preference("P2", "all-bad")
    alice.set_note("P3-base-28", "-3 is not an answer")
    return s


@pytest.fixture(scope="module")
def session_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("golden") / "golden.db"
    build(path).close()
    return path


@pytest.fixture(scope="module")
def data(session_path):
    with Session.open(session_path, create=False) as s:
        return ex.build_export(s)


def golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(actual.encode("utf-8"))
    assert path.is_file(), f"missing golden file {path}; run with OVERTON_UPDATE_GOLDEN=1"
    assert actual == path.read_bytes().decode("utf-8"), f"{name} differs from its golden file"


# --------------------------------------------------------------------------- golden files


@pytest.mark.parametrize("fmt, name", [("csv", "export.csv"), ("json", "export.json"),
                                       ("jsonl", "export.jsonl"), ("md", "export.md")])
def test_golden(data, fmt, name):
    golden(name, ex.render(data, fmt))


def test_golden_summary_and_agreement_csv(data):
    golden("export.summary.csv", ex.summary_csv(data))
    golden("export.agreement.csv", ex.agreement_csv(data))


def test_cli_writes_the_golden_files(session_path, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out.csv"
    r = runner.invoke(app, ["export", str(session_path), "--format", "csv", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "exported 19 answers of 3 prompts, 14 annotations" in " ".join(r.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.agreement.csv", "out.csv", "out.summary.csv"]
    for mine, gold in (("out.csv", "export.csv"), ("out.summary.csv", "export.summary.csv"),
                       ("out.agreement.csv", "export.agreement.csv")):
        assert (tmp_path / mine).read_bytes() == (GOLDEN / gold).read_bytes(), mine
    for fmt in ("json", "jsonl", "md"):
        r = runner.invoke(app, ["export", str(session_path), "--format", fmt])  # stdout
        assert r.exit_code == 0, r.output
        assert r.stdout == (GOLDEN / f"export.{fmt}").read_text(encoding="utf-8"), fmt
    # the format follows the output's suffix when not given
    r = runner.invoke(app, ["export", str(session_path), "-o", str(tmp_path / "report.md")])
    assert r.exit_code == 0 and (tmp_path / "report.md").read_bytes() == (GOLDEN / "export.md").read_bytes()


# --------------------------------------------------------------------------- contents


def test_rows_match_what_was_entered(data):
    rows = {r["generation_id"]: r for r in data.generations}
    # the answers stats count (newest batches, no cancelled one, no summary), plus the annotated
    # answers of replaced batches
    assert "P1-summary" not in rows and "P1-hinted-19" not in rows and "P1-hinted-18" not in rows
    assert rows["P1-base-10"]["in_stats"] is False and rows["P1-base-10"]["labels"] == ["off-topic"]
    assert [r["generation_id"] for r in data.generations if r["prompt_id"] == "P1"] == [
        "P1-base-10", "P1-base-13", "P1-base-14", "P1-icl-15", "P1-icl-16", "P1-hinted-17", "P1-hinted-20",
        "P1-hinted-21", "P1-aligned-11", "P1-aligned-12"]  # base first, the reference last, as in stats
    assert len(data.generations) == 19 and data.counts["generations_in_stats"] == 17
    r = rows["P1-base-14"]
    assert (r["condition"], r["sample_index"], r["text"], r["prompt"], r["external_id"]) == (
        "base", 1, "-2 zulu", INJECTION, "inj")
    assert r["rating"] == 3.5 and r["ratings"] == {"alice": 4, "bob": 3}
    assert r["labels"] == ["helpful", "repetitive"]
    assert r["labels_by_annotator"] == {"alice": ["helpful"], "bob": ["helpful", "repetitive"]}
    assert r["annotators"] == ["alice", "bob"] and r["notes"] == {}
    assert r["preference"] == ["hinted", "tie"] and r["preferred_by"] == 0
    old = rows["P1-hinted-17"]
    assert old["in_stats"] is False and old["ratings"] == {"alice": 5, "bob": 5} and old["rating"] == 5.0
    assert old["preferred_by"] == 1  # alice chose hinted for P1
    assert rows["P1-hinted-21"]["notes"] == {"alice": RICH_NOTE} and rows["P1-hinted-21"]["annotators"] == ["alice"]
    assert rows["P2-aligned-22"]["ratings"] == {"alice": 2} and rows["P2-aligned-22"]["preference"] == ["all-bad"]
    assert rows["P3-base-28"]["notes"] == {"alice": "-3 is not an answer"} and rows["P3-base-28"]["preference"] == []


def test_metrics_in_rows(data):
    rows = {r["generation_id"]: r for r in data.generations}
    # P1 reference: aligned s0 "alpha bravo charlie delta"
    assert rows["P1-aligned-11"]["similarity"] is None and rows["P1-aligned-11"]["coverage"] is None
    assert rows["P1-aligned-12"]["similarity"] == pytest.approx(2 / 5)  # {alpha bravo echo}
    assert rows["P1-base-13"]["similarity"] == pytest.approx(2 / 5)  # {+1 alpha bravo}: '+1' is a word
    assert rows["P1-base-13"]["coverage"] == pytest.approx(2 / 3)
    assert rows["P1-base-10"]["similarity"] == pytest.approx(1 / 6)  # older batch, same reference
    assert rows["P1-hinted-21"]["similarity"] == pytest.approx(1 / 9)  # {@ SUM 1 alpha quoted next line}
    assert rows["P1-icl-15"]["similarity"] == 0.0
    assert rows["P3-base-28"]["similarity"] is None  # P3 has no reference answer
    assert rows["P2-base-25"]["words"] == 1 and rows["P3-base-29"]["words"] == 4
    assert rows["P1-hinted-21"]["words"] == 5
    summary = {s["condition"]: s for s in data.summary}
    assert [s["condition"] for s in data.summary] == ["base", "icl", "hinted", "aligned"]
    # icl: similarity 0 against base 0.225 and ceiling (2/5 + 1/3) / 2
    assert summary["icl"]["gap_closed"] == pytest.approx(-0.225 / ((2 / 5 + 1 / 3) / 2 - 0.225))
    assert summary["base"]["ratings"] == 2 and summary["base"]["mean_rating"] == 3.5
    assert summary["hinted"]["ratings"] == 2 and summary["hinted"]["mean_rating"] == 5.0
    assert summary["hinted"]["preference_wins"] == 1 and summary["aligned"]["ratings"] == 1
    assert data.preferences == {"prompts": 2, "preferences": 3, "tie": 1, "all-bad": 1}
    assert data.agreement["ratings"] == {"generations": 2, "pairs": 2, "exact": 0.5, "within_one": 1.0,
                                         "mean_abs_diff": 0.5}


def test_csv_formula_injection_neutralised(data):
    rows = list(csv.reader(io.StringIO(ex.to_csv(data))))
    header, body = rows[0], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    assert tuple(header) == ex.GENERATION_COLUMNS
    cells = [c for row in body for c in row]
    for cell in cells:  # no string cell a spreadsheet would evaluate
        if cell and cell[0] in "=+-@\t\r":
            float(cell)  # only numbers may start so
    prompts = {row[col["prompt"]] for row in body}
    assert "'" + INJECTION in prompts and "'+1" in prompts and TRICKY in prompts  # newlines, commas, quotes kept
    assert "'@SUM(1)" in {row[col["external_id"]] for row in body}
    texts = {row[col["text"]] for row in body}
    assert {"'+1 alpha bravo", "'-2 zulu", "'\tkilo", "'-3", "'=1+1", "'@SUM(1) alpha, \"quoted\"\nnext line"} <= texts
    notes = [json.loads(row[col["notes"]]) for row in body if row[col["notes"]] != "{}"]
    assert {"alice": RICH_NOTE} in notes  # JSON text starts with '{': safe, and exact
    summary = list(csv.DictReader(io.StringIO(ex.summary_csv(data))))
    icl = next(r for r in summary if r["condition"] == "icl")
    assert float(icl["gap_closed"]) < 0 and icl["gap_closed"].startswith("-")  # a number, not escaped
    assert ex.csv_cell(-0.5) == -0.5 and ex.csv_cell("-0.5") == "'-0.5" and ex.csv_cell("a=b") == "a=b"
    assert ex.csv_cell("\rx") == "'\rx" and ex.csv_cell(True) == 1 and ex.csv_cell(None) == ""


def test_json_and_jsonl(data):
    obj = json.loads(ex.to_json(data))
    assert {"generations", "summary", "agreement"} <= set(obj)
    assert obj["session"] == "golden.db" and obj["reference"] == "aligned" and obj["base"] == "base"
    assert [g["generation_id"] for g in obj["generations"]] == [r["generation_id"] for r in data.generations]
    lines = ex.to_jsonl(data).splitlines()
    assert len(lines) == 19
    first = json.loads(lines[0])
    assert tuple(first) == ex.GENERATION_COLUMNS
    assert first["prompt"] == INJECTION and first["labels"] == ["off-topic"] and first["in_stats"] is False


def test_markdown_report(data):
    md = ex.to_markdown(data)
    assert md.startswith("# overton export: golden.db\n")
    assert "| condition | prompts | samples |" in md
    assert ("| base | 3 | 6 | 2 | 0.000 | 0.225 | 0.417 | 0.000 | 0.0% | 2 | 3.50 | "
            "helpful 2, off-topic 1, repetitive 1 | 1 | 0 |") in md
    assert "- ratings: 2 answers rated by several annotators, 2 pairs; exact 50.0%, within one point 100.0%" in md
    assert "rating 3.50 (alice 4, bob 3) · labels: alice: helpful; bob: helpful, repetitive" in md
    assert "Preferred: alice: hinted; bob: tie" in md and "Preferred: alice: all-bad" in md
    assert "> **alice:** =HYPERLINK(\"http://x\")\n> second line, with \\[red\\]markup\\[/red\\]" in md
    assert "`````text\nanswer with ````four backticks````\n`````" in md  # a fence longer than the text's
    assert "```text\n" + TRICKY + "\n```" in md  # prompt text literal in a fence
    assert "not in the statistics" in md


def test_markdown_cuts_long_answers(tmp_path):
    with Session.open(tmp_path / "long.db") as s:
        s.add_prompt("p", id="P", created_at=stamp(0))
        s.add_generation("P", id="G", condition="aligned", text="word " * 500, created_at=stamp(1))
        md = ex.to_markdown(ex.build_export(s))
    body = md.split("```text\n")[-1]
    assert len(body.split("\n")[0]) <= ex.MD_ANSWER_CHARS + 2 and body.split("\n")[0].endswith(" …")
    assert "500 words" in md


def test_all_includes_every_answer(session_path):
    with Session.open(session_path, create=False) as s:
        everything = ex.build_export(s, include_all=True)
    ids = {r["generation_id"] for r in everything.generations}
    assert {"P1-hinted-17", "P1-hinted-18", "P1-hinted-19"} <= ids and "P1-summary" not in ids
    assert len(ids) == 21
    cancelled = next(r for r in everything.generations if r["generation_id"] == "P1-hinted-19")
    assert cancelled["finish_reason"] == "cancelled" and cancelled["in_stats"] is False


def test_without_reference_condition(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        s.add_prompt("p", id="P", created_at=stamp(0))
        s.add_generation("P", id="G", condition="base", text="alpha", created_at=stamp(1))
        Annotations(s, "a").set_rating("G", 2)
        e = ex.build_export(s)
    assert e.reference_found is False and e.generations[0]["similarity"] is None
    assert e.summary[0]["mean_rating"] == 2.0 and e.summary[0]["similarity"] is None
    assert "aligned (not in this session: no similarity or coverage)" in ex.to_markdown(e)


def test_empty_session_exports(tmp_path):
    with Session.open(tmp_path / "empty.db") as s:
        e = ex.build_export(s)
    assert e.generations == [] and e.summary == [] and ex.to_jsonl(e) == ""
    assert ex.to_csv(e) == ",".join(ex.GENERATION_COLUMNS) + "\n"
    assert "No answers yet." in ex.to_markdown(e)


# --------------------------------------------------------------------------- errors and atomic writes


def test_cli_user_errors_write_nothing(session_path, tmp_path, monkeypatch):
    runner = CliRunner()
    target = tmp_path / "x.csv"
    before = session_path.read_bytes()

    def check(args, message):
        r = runner.invoke(app, ["export", *args])
        assert r.exit_code == 1, r.output
        assert message in " ".join(r.stderr.split()) and "Traceback" not in r.output
        assert r.stdout == ""
        assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())

    check([str(session_path), "--format", "xlsx", "-o", str(target)], "unknown export format 'xlsx'")
    check([str(session_path), "--reference", "nope", "-o", str(target)], "reference condition 'nope'")
    check([str(session_path), "--base", "nope"], "base condition 'nope'")
    check([str(session_path), "-o", str(tmp_path / "missing" / "x.md")], "does not exist")
    check([str(tmp_path / "absent.db"), "-o", str(target)], "No session file")
    check([str(session_path), "-f", "md", "-o", str(session_path)], "the session file itself")
    assert session_path.read_bytes() == before
    monkeypatch.setenv("OVERTON_SESSIONS_DIR", str(tmp_path))
    check(["typo"], "No session file")


def test_failed_write_leaves_nothing_and_keeps_old_file(data, tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("previous export\n")
    files = ex.outputs(data, "csv", out)
    assert list(files) == [out, tmp_path / "out.summary.csv", tmp_path / "out.agreement.csv"]
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(ex.os, "replace", flaky)
    with pytest.raises(ex.ExportError, match="No space left on device"):
        ex.write_files(files)
    monkeypatch.setattr(ex.os, "replace", real_replace)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # temporary files removed
    assert out.read_text() == "previous export\n"
    assert ex.write_files(files) == list(files)
    assert out.read_text(encoding="utf-8") == ex.to_csv(data)


def test_format_for():
    assert ex.format_for(None, None) == "md"
    assert ex.format_for(None, Path("a.JSONL")) == "jsonl"
    assert ex.format_for(None, Path("a.txt")) == "md"
    assert ex.format_for("CSV", Path("a.md")) == "csv"
    for binary in ("out.xlsx", "out.XLS", "report.pdf", "copy.db"):
        with pytest.raises(ex.ExportError, match="does not write"):
            ex.format_for(None, Path(binary))
    with pytest.raises(ex.ExportError, match="choose one of: csv, json, jsonl, md"):
        ex.format_for("xml", None)


def test_export_session_for_the_app(session_path, tmp_path):
    with Session.open(session_path, create=False) as s:
        written = ex.export_session(s, "json", tmp_path / "e.json")
        assert written == [tmp_path / "e.json"]
        assert (tmp_path / "e.json").read_bytes() == (GOLDEN / "export.json").read_bytes()
        with pytest.raises(ex.ExportError, match="session file itself"):
            ex.export_session(s, "md", session_path)
        from engine.stats import StatsError

        with pytest.raises(StatsError):
            ex.export_session(s, "md", tmp_path / "x.md", reference="nope")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json"]

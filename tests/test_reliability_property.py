"""Issue 6, property-based tests (hypothesis): the metrics' symmetry, bounds and empty texts;
the import parser on generated and fuzzed input (no unhandled exception, every bad line named
with a line number that exists, good lines round-trip exactly); the sanitiser; CSV cells."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from engine import metrics as m
from engine.export import FORMULA_PREFIXES, csv_cell
from engine.importer import ImportFailed, import_files, parse_file
from engine.sanitize import printable
from engine.session import Session

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Texts that exercise the tokenizer: words, stopwords, punctuation, unicode, controls, fences.
WORDS = st.sampled_from(["tea", "Tea", "the", "The", "a", "cold", "rest", "don't", "U.S.", "```", "—", "“quoted”",
                         "1.", "-", "*", "é", "中文", "🙂", "\x1b[31m", "\n", "  ", "fluids.", "#", "Query:"])
TEXTS = st.one_of(st.lists(WORDS, max_size=25).map(" ".join), st.text(max_size=80))


# ----------------------------------------------------------------------------- metrics


@FAST
@given(TEXTS, TEXTS)
def test_jaccard_is_symmetric_bounded_and_undefined_only_for_two_empty_bags(a, b):
    ab, ba = m.jaccard(a, b), m.jaccard(b, a)
    assert ab == ba
    empty = not m.word_bag(a) and not m.word_bag(b)
    assert (ab is None) == empty
    if ab is not None:
        assert 0.0 <= ab <= 1.0
        assert (ab == 1.0) == (m.word_bag(a) == m.word_bag(b))


@FAST
@given(TEXTS, TEXTS)
def test_coverage_is_bounded_and_undefined_only_for_an_empty_bag(a, b):
    c = m.coverage(a, b)
    assert (c is None) == (not m.word_bag(a))
    if c is not None:
        assert 0.0 <= c <= 1.0
        assert m.coverage(a, a) == 1.0
        # Jaccard never exceeds the coverage of either side.
        j = m.jaccard(a, b)
        assert j is not None and j <= c + 1e-12


@FAST
@given(st.lists(TEXTS, max_size=6), st.randoms(use_true_random=False))
def test_mean_pairwise_jaccard_ignores_sample_order(samples, rnd):
    shuffled = list(samples)
    rnd.shuffle(shuffled)
    a, b = m.mean_pairwise_jaccard(samples), m.mean_pairwise_jaccard(shuffled)
    assert (a is None) == (b is None)
    if a is not None:
        assert a == pytest.approx(b) and 0.0 <= a <= 1.0
    if len(samples) < 2:
        assert a is None


@FAST
@given(TEXTS)
def test_text_measures_never_raise_and_agree_on_empty_text(text):
    assert m.word_count(text) >= 0
    assert (m.word_count(text) == 0) == (not text.split())
    bag = m.word_bag(text)
    assert all(w and not m.is_punctuation(w) and w not in m.stopwords() for w in bag)
    flags = m.quality_flags(text)
    assert all(isinstance(flags[k], bool) for k in ("abstain", "numbered_list", "bullet_list"))


def test_empty_texts_everywhere():
    for blank in ("", " ", "\n\t", "```", "the a of", "...!?"):
        assert m.word_bag(blank) == frozenset()
        assert m.jaccard(blank, "") is None and m.coverage(blank, "tea") is None
        assert m.jaccard(blank, "tea") == 0.0
        assert m.coverage("tea", blank) == 0.0
    assert m.mean_pairwise_jaccard(["", ""]) is None
    assert m.mean_pairwise_jaccard([]) is None


# ----------------------------------------------------------------------------- the import parser


def _valid_line(draw_id, prompt, samples):
    return {"id": draw_id, "prompt": prompt, "samples": samples}


NONEMPTY = st.text(min_size=1, max_size=30).filter(lambda t: t.strip())
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                           max_leaves=8)
ANY_OBJECT = st.dictionaries(st.sampled_from(["id", "prompt", "samples", "text", "hint", "condition", "model", "x"]),
                             JSON_VALUES, max_size=6)


@st.composite
def jsonl_files(draw):
    """A list of (bytes of one line, whether it is a valid line of a fresh id)."""
    lines: list[tuple[bytes, bool]] = []
    used: set[str] = set()
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["valid", "object", "junk", "blank", "bytes"]))
        if kind == "valid":
            ext = "valid-" + draw(NONEMPTY)
            if ext in used:
                continue
            used.add(ext)
            line = _valid_line(ext, draw(NONEMPTY), draw(st.lists(st.text(max_size=20), min_size=1, max_size=3)))
            lines.append((json.dumps(line, ensure_ascii=draw(st.booleans())).encode(), True))
        elif kind == "object":
            lines.append((json.dumps(draw(ANY_OBJECT)).encode(), False))
        elif kind == "junk":
            lines.append((draw(st.text(max_size=30)).replace("\n", "").encode("utf-8", "surrogatepass"), False))
        elif kind == "blank":
            lines.append((draw(st.sampled_from([b"", b"  ", b"\t"])), False))
        else:
            lines.append((draw(st.binary(max_size=30)).replace(b"\n", b""), False))
    return lines


def _has_content(line: bytes) -> bool:
    try:
        return bool(line.removesuffix(b"\r").decode("utf-8").strip())
    except UnicodeDecodeError:
        return True  # reported as not UTF-8


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jsonl_files(), st.booleans(), st.booleans())
@example([(b"\xef\xbb\xbf", False)], False, False)  # a file that is only a BOM: empty
def test_parser_names_every_bad_line_and_keeps_every_good_one(tmp_path, lines, bom, crlf):
    sep = b"\r\n" if crlf else b"\n"
    f = tmp_path / "base.jsonl"
    f.write_bytes((b"\xef\xbb\xbf" if bom else b"") + sep.join(line for line, _ in lines) + (sep if lines else b""))
    parsed = parse_file(f)  # never raises for content
    if f.read_bytes().startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):  # UTF-16/32: one message
        assert [b.line for b in parsed.bad] == [None] and "UTF-" in parsed.bad[0].message and not parsed.records
        return
    numbered = {b.line for b in parsed.bad if b.line is not None}
    assert all(1 <= n <= len(lines) for n in numbered)
    good = [n for n, (_, ok) in enumerate(lines, 1) if ok]
    assert [r.line for r in parsed.records if r.line in good] == good  # valid lines of fresh ids parse
    assert not set(good) & numbered
    for rec in parsed.records:
        raw = json.loads(lines[rec.line - 1][0].decode("utf-8"))
        assert rec.prompt == raw["prompt"] and rec.external_id == str(raw["id"])
        assert rec.texts == (raw["samples"] if rec.form == "samples" else [raw[rec.form]])
    # Three bytes EF BB BF that start the file are its encoding mark (a BOM), whichever line
    # the generator meant them for.
    content = [n for n, (line, _) in enumerate(lines, 1)
               if _has_content(line.removeprefix(b"\xef\xbb\xbf") if n == 1 and not bom else line)]
    # Every line with content is either a record or a bad line; an empty file is one bad entry.
    assert sorted({r.line for r in parsed.records} | numbered) == content
    if not content:
        assert [b.line for b in parsed.bad] == [None]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe"]))
def test_fuzzed_bytes_never_raise_and_import_all_or_nothing(tmp_path, data, prefix):
    """Arbitrary bytes (and a valid line spliced with them): parsing reports, importing either
    writes everything good or nothing, and the session stays sound."""
    f = tmp_path / "fuzz.jsonl"
    good = json.dumps({"id": "ok", "prompt": "Fine?", "samples": ["yes"]}).encode()
    f.write_bytes(prefix + data + b"\n" + good + b"\n" + data[::-1])
    parse_file(f)
    db = tmp_path / "fuzz.db"
    if db.exists():
        db.unlink()
    with Session.open(db) as s:
        try:
            summary = import_files(s, [f])
        except ImportFailed as exc:
            assert exc.bad_lines and all(str(b).startswith(str(f)) for b in exc.bad_lines)
            assert s.counts()["generations"] == 0 and s.counts()["prompts"] == 0
        else:
            assert summary.bad_lines == [] and summary.generations_added >= 1
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        try:
            import_files(s, [f], skip_bad=True)
        except ImportFailed as exc:  # only when no line at all is usable
            assert exc.bad_lines
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ----------------------------------------------------------------------------- sanitiser, CSV, session names


CONTROL = {chr(c) for c in [*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]}


@FAST
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60))
def test_printable_leaves_no_control_character(text):
    shown = printable(text)
    assert not (set(shown) & CONTROL)
    shown.encode("utf-8")  # never a lone surrogate: safe to write to any UTF-8 terminal
    assert printable(shown) == shown  # idempotent
    if not (set(text) & CONTROL) and "\r\n" not in text and text.encode("utf-8", "surrogatepass") == text.encode(
            "utf-8", "ignore"):
        assert shown == text


@FAST
@given(st.text(max_size=40))
def test_csv_cells_never_start_a_formula(text):
    buf = io.StringIO()
    csv.writer(buf).writerow([csv_cell(text)])
    (cell,) = next(csv.reader(io.StringIO(buf.getvalue())))
    assert not cell.startswith(FORMULA_PREFIXES)
    assert cell in (text, "'" + text)


@FAST
@given(st.text(max_size=30))
def test_session_names_resolve_inside_the_sessions_dir_or_are_refused(name):
    from engine.session import SessionError, resolve_session_path

    assume("/" not in name and not name.startswith("~"))
    sessions = Path("/nonexistent-overton-sessions/dir")
    try:
        path = resolve_session_path(name, sessions)
    except SessionError as exc:
        printable(str(exc)).encode("utf-8")
        return
    assert path.parent == sessions and path.resolve().parent == sessions.resolve()
    assert not path.name.startswith(".") and "\x00" not in str(path)

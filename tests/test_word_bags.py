"""Stored word bags (schema v4, ``word_bags``): the migration, the store, and that statistics and
exports are identical whether the bags come from the session or from the tokenizer."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from engine import metrics as m
from engine import stats as stats_mod
from engine.export import build_export, render
from engine.session import SCHEMA_VERSION, Session, content_hash
from engine.stats import compute_stats, session_word_bags

REF_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "lima-oe"

TEXTS = {
    "base": ["Tea is a drink made from leaves.\n```", "The tea plant grows in hills, and it's green.", ""],
    "aligned": ["Tea is a hot drink: brew the leaves in water.", "Tea — leaves, water, time.",
                "1. Boil water\n2. Add leaves\n- stir\n- wait"],
    "hinted": ["As an AI language model, I can't have personal views on tea.", "Leaves in hot water make tea.",
               "Tea, water."],
}


def build(path: Path) -> Session:
    s = Session.open(path)
    for q in ("What is tea?", "How is tea made?"):
        pid = s.add_prompt(q)
        for cond, texts in TEXTS.items():
            for i, text in enumerate(texts):
                s.add_generation(pid, condition=cond, sample_index=i, text=text + (" " + q if i == 1 else ""),
                                 finish_reason="stop")
    return s


def no_tokenizer(monkeypatch) -> None:
    """Make any tokenizing fail: whatever is computed now must come from stored bags."""
    m.word_bag.cache_clear()

    def refuse(text):
        raise AssertionError(f"tokenized {text[:30]!r} although its bag is stored")

    monkeypatch.setattr(m, "word_bag", refuse)


def stored_rows(path: Path) -> list[tuple]:
    raw = sqlite3.connect(path)
    try:
        return raw.execute("SELECT content_hash, tokenizer, bag_json FROM word_bags ORDER BY content_hash").fetchall()
    finally:
        raw.close()


def test_word_bag_key_names_nltk_version_and_definition():
    import importlib.metadata

    key = m.word_bag_key()
    assert key == (f"nltk-{importlib.metadata.version('nltk')}/treebank-words/stop179/punct-P/"
                   f"v{m.WORD_BAG_VERSION}")


def test_store_and_read_back(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        texts = ["Tea is a drink.", "The tea plant, and it's green.", "", "Tea is a drink."]
        bags = {t: m.word_bag(t) for t in texts}
        assert s.store_word_bags("k1", bags) == 3
        assert s.word_bags_for("k1", texts) == bags
        assert s.word_bags_for("k2", texts) == {}  # another tokenizer key: nothing
        assert s.word_bags_for("k1", ["never stored"]) == {}
        assert s.word_bags_for("k1", []) == {}
    rows = stored_rows(tmp_path / "s.db")
    assert [(h, k) for h, k, _ in rows] == sorted((content_hash(t), "k1") for t in set(texts))
    by_hash = {h: json.loads(b) for h, _, b in rows}
    assert by_hash[content_hash("Tea is a drink.")] == ["Tea", "drink"]  # sorted, distinct
    assert by_hash[content_hash("")] == []


def test_damaged_row_counts_as_missing(tmp_path):
    path = tmp_path / "s.db"
    with Session.open(path) as s:
        s.store_word_bags("k", {"a b": ["a", "b"], "c": ["c"]})
    raw = sqlite3.connect(path)
    raw.execute("UPDATE word_bags SET bag_json = 'not json' WHERE content_hash = ?", [content_hash("a b")])
    raw.commit()
    raw.close()
    with Session.open(path) as s:
        assert s.word_bags_for("k", ["a b", "c"]) == {"c": frozenset({"c"})}


def test_v3_file_is_upgraded_to_word_bags(tmp_path):
    import sqlite_utils

    from engine.session import migrations

    path = tmp_path / "v3.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m004_word_bags")
    db.execute("PRAGMA user_version = 3")
    db.conn.commit()
    db.close()
    raw = sqlite3.connect(path)
    assert "word_bags" not in {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    raw.close()
    with Session.open(path, create=False) as s:
        pid = s.add_prompt("What is tea?")
        s.add_generation(pid, condition="aligned", text="Tea is a drink.")
        s.add_generation(pid, condition="base", text="A plant.")
        compute_stats(s)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    names = [r[0] for r in raw.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
    assert names == ["m001_initial", "m002_embeddings", "m003_annotations", "m004_word_bags"]
    cols = {r[1]: (r[2], r[5]) for r in raw.execute("PRAGMA table_info(word_bags)")}
    assert cols == {"content_hash": ("TEXT", 1), "tokenizer": ("TEXT", 2), "bag_json": ("TEXT", 0),
                    "created_at": ("TEXT", 0)}
    assert raw.execute("SELECT count(*) FROM word_bags").fetchone()[0] == 2
    raw.close()


def test_stats_store_bags_then_reuse_them_with_identical_figures(tmp_path, monkeypatch):
    path = tmp_path / "s.db"
    s = build(path)
    try:
        assert stored_rows(path) == []
        first = compute_stats(s).to_records()
        texts = {g["text"] for g in s.generations()}
        rows = stored_rows(path)
        assert len(rows) == len(texts)
        assert {h for h, _, _ in rows} == {content_hash(t) for t in texts}
        assert all(k == m.word_bag_key() for _, k, _ in rows)
        for text in texts:  # the stored bag is the computed one
            assert set(json.loads({h: b for h, _, b in rows}[content_hash(text)])) == m.word_bag(text)
        export_first = render(build_export(s), "json")

        no_tokenizer(monkeypatch)
        second = compute_stats(s).to_records()
        assert second == first
        assert render(build_export(s), "json") == export_first
    finally:
        s.close()


def test_figures_without_any_cache_match(tmp_path):
    """The cached path equals the plain metrics functions on texts (no session store at all)."""
    s = build(tmp_path / "s.db")
    try:
        cached = compute_stats(s)
        batches = s.latest_batches()
        per = {}
        for (pid, cond), rows in batches.items():
            per.setdefault(cond, []).append([r["text"] for r in rows.values()])
        refs = [b[0] for b in per["aligned"]]
        for cond in ("base", "hinted"):
            row = cached.row(cond)
            assert row.diversity == m.diversity(per[cond])
            assert row.similarity == m.similarity(per[cond], refs)
            assert row.coverage == m.coverage_mean(per[cond], refs)
        ceiling = cached.row("aligned")
        assert ceiling.similarity == m.similarity([b[1:] for b in per["aligned"]], refs)
    finally:
        s.close()


def test_stale_tokenizer_key_is_recomputed(tmp_path, monkeypatch):
    s = build(tmp_path / "s.db")
    try:
        first = compute_stats(s).to_records()
        monkeypatch.setattr(m, "word_bag_key", lambda: "another-tokenizer/v9")
        calls = []
        real = m.word_bag

        def counting(text):
            calls.append(text)
            return real(text)

        monkeypatch.setattr(m, "word_bag", counting)
        assert compute_stats(s).to_records() == first
        assert len(calls) == len({g["text"] for g in s.generations()})  # every bag made again
    finally:
        s.close()


def test_session_word_bags_survives_a_store_that_fails(tmp_path, monkeypatch):
    s = build(tmp_path / "s.db")
    try:
        def fail(*a, **k):
            raise sqlite3.OperationalError("attempt to write a readonly database")

        monkeypatch.setattr(s, "store_word_bags", fail)
        bags = session_word_bags(s, ["Tea is a drink.", ""])
        assert bags == {"Tea is a drink.": frozenset({"Tea", "drink"}), "": frozenset()}
    finally:
        s.close()


@pytest.mark.skipif(not REF_DIR.is_dir(), reason=f"reference data not present at {REF_DIR}")
def test_reference_subset_identical_with_stored_bags(tmp_path, monkeypatch):
    """10 prompts of the paper's released generations: the same figures from stored bags."""
    from engine.importer import import_parsed, parse_files

    subset = []
    for f in sorted(REF_DIR.glob("llama-2-*.jsonl")):
        if f.name.endswith(".hints.jsonl"):
            continue
        lines = f.read_text(encoding="utf-8").splitlines()[:10]
        (tmp_path / f.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        subset.append(tmp_path / f.name)
    with Session.open(tmp_path / "ref.db") as s:
        import_parsed(s, parse_files(subset, None))
        first = compute_stats(s, reference="llama-2-chat", base="llama-2-base").to_json()
        no_tokenizer(monkeypatch)
        assert compute_stats(s, reference="llama-2-chat", base="llama-2-base").to_json() == first


# --------------------------------------------------------------------------- faster metrics, same values


ABSTAIN_CASES = [
    "As an AI LANGUAGE MODEL I cannot", "I can’t have personal opinions", "I do not  have personal views",
    "I CANNOT CONDONE that", "I cannot provide personal advice", "model personal condone",
    "AI language moDel", "I don’t have perſonal views", "İ cannot condone", "ai language model" * 3,
    "No abstention here at all.", "", "personal", "a model", "ΑΙ language model",
    "I cannot\nprovide personal data", "xx" * 40 + "cannot condone",
]


def test_abstains_equals_the_full_pattern():
    texts = list(ABSTAIN_CASES)
    if REF_DIR.is_dir():
        for f in REF_DIR.glob("llama-2-*.jsonl"):
            for line in f.read_text(encoding="utf-8").splitlines():
                texts.extend(json.loads(line).get("samples", []))
    found = [m.abstains(t) for t in texts]
    assert found == [bool(m._ABSTAIN.search(t)) for t in texts]
    assert found[:len(ABSTAIN_CASES)] == [True, True, False, True, True, False, True, True, True, True,
                                          False, False, False, False, False, False, True]


def test_numbered_list_prefilter_keeps_unicode_digits():
    assert m.quality_flags("١. one\n٢. two")["numbered_list"] == bool(
        re.match(r"(\d+)\. ", "١. one"))  # Arabic-Indic digits are \d and isdigit()
    assert m.quality_flags("1. a\n2. b")["numbered_list"] is True
    assert m.quality_flags("² . a")["numbered_list"] is False


def test_jaccard_is_intersection_over_union():
    bags = [frozenset(), frozenset("ab"), frozenset("bc"), frozenset("abc"), frozenset("xyz")]
    for a in bags:
        for b in bags:
            expected = len(a & b) / len(a | b) if a | b else None
            assert m.jaccard(a, b) == expected


def test_stats_module_never_tokenizes_a_stored_text(tmp_path, monkeypatch):
    """The stats code path reads every bag from the session once stored (not only the aggregates)."""
    s = build(tmp_path / "s.db")
    try:
        compute_stats(s)
        no_tokenizer(monkeypatch)
        assert stats_mod.compute_stats(s).row("hinted").abstain_rate == pytest.approx(1 / 3)
    finally:
        s.close()

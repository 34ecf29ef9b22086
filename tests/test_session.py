"""Session files: schema, round trips, path rules, refusal of bad files, concurrency."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ulid import ULID

from engine.session import (
    SCHEMA_VERSION,
    Session,
    SessionError,
    resolve_session_path,
)

REPO = Path(__file__).resolve().parents[1]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_utc_iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    assert abs(datetime.now(parsed.tzinfo) - parsed) < timedelta(minutes=5)
    return parsed


def make_session_file(path: Path, n: int = 30) -> None:
    with Session.open(path) as s:
        for i in range(n):
            pid = s.add_prompt(f"prompt {i} " + "x" * 400, external_id=f"p{i}")
            s.add_generation(pid, condition="base", text="answer " * 100)


# --------------------------------------------------------------------------- basics


def test_create_reopen_append(tmp_path):
    path = tmp_path / "nested" / "dir" / "s.db"  # parent folders are created
    with Session.open(path) as s:
        p1 = s.add_prompt("first")
        meta = s.meta()
        assert meta["overton_version"]
        assert meta["notes"] == ""
        assert_utc_iso(meta["created_at"])
    assert path.is_file()

    with Session.open(path, create=False) as s:
        p2 = s.add_prompt("second")
        s.set_meta("notes", "pilot run")
        assert [p["id"] for p in s.prompts()] == [p1, p2]  # newest last
        assert [p["text"] for p in s.prompts()] == ["first", "second"]
        assert s.counts() == {"prompts": 2, "hints": 0, "generations": 0, "metrics": 0}
        assert s.meta()["created_at"] == meta["created_at"]  # not re-initialised

    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    applied = raw.execute("SELECT migration_set, name, applied_at FROM _sqlite_migrations").fetchall()
    assert [(a, b) for a, b, _ in applied] == [("overton", "m001_initial"), ("overton", "m002_embeddings"),
                                               ("overton", "m003_annotations"), ("overton", "m004_word_bags")]  # applied once
    assert raw.execute("SELECT value FROM sessions_meta WHERE key='notes'").fetchone()[0] == "pilot run"
    raw.close()


def test_open_missing_without_create(tmp_path):
    with pytest.raises(SessionError, match="No session file"):
        Session.open(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def test_open_directory_refused(tmp_path):
    with pytest.raises(SessionError, match="directory"):
        Session.open(tmp_path)


def test_wal_busy_timeout_foreign_keys(tmp_path):
    path = tmp_path / "s.db"
    with Session.open(path) as s:
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert s.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert s.db.journal_mode == "wal"
    # WAL is persistent: a fresh plain connection sees it too.
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_rows_and_json_round_trip(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        meta = {"dataset": "lima-oe", "tags": ["open", "ended"], "n": 3, "note": "café ✓"}
        pid = s.add_prompt("What is love?", external_id="lima-7", meta=meta)
        assert s.prompt(pid)["meta"] == meta
        assert s.prompt(pid)["text"] == "What is love?"
        assert s.find_prompt("lima-7")["id"] == pid
        assert s.find_prompt("missing") is None
        with pytest.raises(KeyError):
            s.prompt("01NOTAREALID")
        with pytest.raises(ValueError, match="already exists"):
            s.add_prompt("dup", external_id="lima-7")
        s.add_prompt("no external id")
        s.add_prompt("another without one")  # NULL external_ids never collide

        summary = s.add_generation(pid, condition="summary", model_id="m-al", text="A summary.")
        h1 = s.add_hint(pid, "Old hint.", "aligned-summary", model_id="m-al", generation_id=summary)
        h2 = s.add_hint(pid, "Edited hint.", "user")
        assert [h["id"] for h in s.hints(pid)] == [h1, h2]
        assert s.latest_hint(pid)["text"] == "Edited hint."
        assert s.hints(pid)[0]["generation_id"] == summary
        assert s.hints(pid)[0]["model_id"] == "m-al"

        fields = dict(
            condition="hinted",
            sample_index=2,
            model_id="hf:base",
            model_name="SmolLM2-135M",
            model_family="smollm2",
            backend="transformers",
            prompt_text="# Query:\n```\nWhat is love?\n```",
            hint_id=h1,
            settings={"temperature": 0.5, "repetition_penalty": 1.1, "max_new_tokens": 700, "stop": ["```"]},
            seed=1234,
            text="Love is...",
            raw_text="Love is...\n```",
            finish_reason="stop",
            prompt_tokens=321,
            completion_tokens=45,
            duration_s=1.25,
            started_at="2026-01-01T00:00:00.000+00:00",
            meta={"note": "x"},
        )
        gid = s.add_generation(pid, **fields)
        g = next(g for g in s.generations(pid) if g["id"] == gid)
        for key, value in fields.items():
            assert g[key] == value, key
        assert g["hint"] == "Old hint."  # filled from hint_id
        assert g["source"] == "generated"
        assert g["prompt_id"] == pid

        with pytest.raises(ValueError, match="unknown generation fields: temperature"):
            s.add_generation(pid, condition="base", temperature=0.5)
        with pytest.raises(ValueError, match="finish_reason"):
            s.add_generation(pid, condition="base", finish_reason="max_tokens")
        with pytest.raises(ValueError, match="condition"):
            s.add_generation(pid, text="no condition")
        with pytest.raises(ValueError, match="does not exist"):
            s.add_generation("01UNKNOWNPROMPT", condition="base")
        with pytest.raises(ValueError, match="does not exist"):
            s.add_hint("01UNKNOWNPROMPT", "h", "user")
        assert s.counts() == {"prompts": 3, "hints": 2, "generations": 2, "metrics": 0}


def test_generation_ordering_and_filters(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        p = s.add_prompt("q")
        other = s.add_prompt("q2")
        for cond, idx in [("hinted", 1), ("base", 2), ("base", 0), ("aligned", 0), ("base", 1)]:
            s.add_generation(p, condition=cond, sample_index=idx, text=f"{cond}{idx}")
        s.add_generation(other, condition="base", sample_index=0, text="other")
        texts = [g["text"] for g in s.generations(p)]
        assert texts == ["aligned0", "base0", "base1", "base2", "hinted1"]
        assert [g["text"] for g in s.generations(p, condition="base")] == ["base0", "base1", "base2"]
        assert [g["text"] for g in s.generations(condition="base")] == ["base0", "other", "base1", "base2"]
        assert len(s.generations()) == 6
        assert s.generations(p)[0]["settings"] == {}  # NULL settings decode to an empty dict


def test_ulid_ids_and_utc_times(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        pid = s.add_prompt("q")
        hid = s.add_hint(pid, "h", "user")
        gid = s.add_generation(pid, condition="base")
        s.add_metrics(pid, [{"name": "words", "condition": "base", "generation_id": gid, "value": 3}])
        mid = s.metrics(pid)[0]["id"]
        for id_ in (pid, hid, gid, mid):
            assert len(id_) == 26
            assert str(ULID.from_str(id_)) == id_
        assert len({pid, hid, gid, mid}) == 4
        rows = [s.prompt(pid), s.hints(pid)[0], s.generations(pid)[0], s.metrics(pid)[0]]
        for row in rows:
            assert_utc_iso(row["created_at"])


def test_metrics_replacement(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        p = s.add_prompt("q")
        q = s.add_prompt("q2")
        gens = [s.add_generation(p, condition="hinted", sample_index=i) for i in range(3)]

        def jaccard_rows(scale):
            return [
                {"name": "jaccard", "condition": "hinted", "other_condition": "aligned",
                 "generation_id": g, "value": scale * (i + 1), "meta": {"i": i}}
                for i, g in enumerate(gens)
            ]

        s.add_metrics(p, jaccard_rows(0.1) + [
            {"name": "words", "condition": "hinted", "generation_id": gens[0], "value": 120},
            {"name": "jaccard", "condition": "hinted", "other_condition": None, "value": 0.5},
        ])
        s.add_metrics(q, [{"name": "jaccard", "condition": "hinted", "other_condition": "aligned", "value": 0.9}])
        assert s.counts()["metrics"] == 6

        # Recompute the hinted-vs-aligned Jaccard: replaced, not duplicated; others untouched.
        s.add_metrics(p, jaccard_rows(0.2))
        rows = s.metrics(p)
        assert len(rows) == 5
        pair = [r for r in rows if r["other_condition"] == "aligned"]
        assert sorted(r["value"] for r in pair) == pytest.approx([0.2, 0.4, 0.6])
        assert sorted(r["meta"]["i"] for r in pair) == [0, 1, 2]
        assert {r["generation_id"] for r in pair} == set(gens)
        assert [r["value"] for r in rows if r["name"] == "words"] == [120.0]
        assert [r["value"] for r in rows if r["name"] == "jaccard" and r["other_condition"] is None] == [0.5]
        assert [r["value"] for r in s.metrics(q)] == [0.9]

        # A NULL value is allowed (e.g. Jaccard undefined for two empty bags).
        s.add_metrics(p, [{"name": "words", "condition": "hinted", "value": None}])
        assert [r["value"] for r in s.metrics(p) if r["name"] == "words"] == [None]
        with pytest.raises(ValueError, match="unknown metric fields"):
            s.add_metrics(p, [{"name": "x", "score": 1}])
        assert s.counts()["metrics"] == 6


def test_failed_metrics_batch_rolls_back(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        p = s.add_prompt("q")
        s.add_metrics(p, [{"name": "jaccard", "condition": "base", "value": 0.3}])
        with pytest.raises(ValueError, match="does not exist"):
            s.add_metrics(p, [{"name": "jaccard", "condition": "base", "value": 0.4,
                               "generation_id": "01NOSUCHGENERATION"}])
        # The delete of the old row was rolled back with the failed insert.
        assert [r["value"] for r in s.metrics(p)] == [0.3]


# --------------------------------------------------------------------------- path resolution


def test_resolve_none_makes_timestamped_name(tmp_path):
    path = resolve_session_path(None, tmp_path)
    assert path.parent == tmp_path
    assert re.fullmatch(r"session-\d{8}-\d{6}(-\d+)?\.db", path.name)
    assert not path.exists()


@pytest.mark.parametrize(
    "name, expected",
    [("pilot", "pilot.db"), ("pilot.db", "pilot.db"), ("run_2-b.v1", "run_2-b.v1.db"), ("café", "café.db")],
)
def test_resolve_bare_names(tmp_path, monkeypatch, name, expected):
    monkeypatch.chdir(tmp_path)
    sessions = tmp_path / "sessions"
    assert resolve_session_path(name, sessions) == sessions / expected


def test_resolve_paths_taken_as_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sessions = tmp_path / "sessions"
    elsewhere = tmp_path / "colleague" / "their run.db"
    assert resolve_session_path(str(elsewhere), sessions) == elsewhere
    assert resolve_session_path(elsewhere, sessions) == elsewhere
    assert resolve_session_path("sub/x.db", sessions) == Path("sub/x.db")
    assert resolve_session_path("../up.db", sessions) == Path("../up.db")  # explicit path: user's choice
    assert resolve_session_path("~/s.db", sessions) == Path.home() / "s.db"
    # An existing file with a suffix, named without a separator, is that file...
    (tmp_path / "shared.db").write_bytes(b"")
    assert resolve_session_path("shared.db", sessions) == Path("shared.db")
    # ...unless the sessions dir holds a session of that name, which wins.
    sessions.mkdir()
    (sessions / "shared.db").write_bytes(b"")
    assert resolve_session_path("shared.db", sessions) == sessions / "shared.db"
    # A stray file without a suffix never hijacks a bare session name.
    (tmp_path / "pilot").write_text("notes")
    assert resolve_session_path("pilot", sessions) == sessions / "pilot.db"


@pytest.mark.parametrize(
    "bad",
    ["..", "...", ".hidden", "a..b", "..db", "a:b", "a*b", "a?b", 'a"b', "a<b", "a>b", "a|b",
     "a\x00b", "a\nb", "tab\there", "\x7f", "", "   ", "sp ace", "a\\b", "x" * 300],
)
def test_resolve_rejects_bad_names(tmp_path, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SessionError) as info:
        resolve_session_path(bad, tmp_path / "sessions")
    message = str(info.value)
    assert message and "Traceback" not in message
    assert any(w in message for w in ("Use letters", "too long", "empty", "control"))


def test_resolve_rejects_reserved_chars_in_new_paths(tmp_path):
    with pytest.raises(SessionError, match="reserved characters"):
        resolve_session_path(str(tmp_path / "a?b.db"), tmp_path)
    with pytest.raises(SessionError, match="control"):
        resolve_session_path(str(tmp_path / "a\x00b.db"), tmp_path)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_resolve_bare_name_never_escapes(text):
    sessions = Path("/nonexistent-overton-sessions/dir")
    if "/" in text or text.startswith("~") or (Path(text).suffix and Path(text).exists()):
        return  # paths are the user's explicit choice
    try:
        path = resolve_session_path(text, sessions)
    except SessionError:
        return
    assert path.parent == sessions
    assert path.name in (text, text + ".db")
    assert path.resolve().parent == sessions.resolve()


# --------------------------------------------------------------------------- refusing bad files


def test_refuses_non_sqlite_file_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 20)
    before = sha(path)
    with pytest.raises(SessionError, match="not a SQLite database"):
        Session.open(path)
    assert sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]  # no -wal/-shm left behind


def test_refuses_short_file_untouched(tmp_path):
    path = tmp_path / "short.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 20)
    before = sha(path)
    with pytest.raises(SessionError, match="truncated"):
        Session.open(path)
    assert sha(path) == before


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_refuses_truncated_sqlite_untouched(tmp_path, fraction):
    path = tmp_path / "s.db"
    make_session_file(path)
    data = path.read_bytes()
    assert len(data) > 8 * 4096
    path.write_bytes(data[: int(len(data) * fraction) // 4096 * 4096])
    before = sha(path)
    with pytest.raises(SessionError, match="damaged") as info:
        Session.open(path)
    assert "untouched" in str(info.value)
    assert sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]  # no -wal/-shm left behind


def test_refuses_newer_schema_untouched(tmp_path):
    path = tmp_path / "future.db"
    make_session_file(path, n=3)
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.execute("PRAGMA journal_mode = delete")  # as a future version might leave it
    raw.commit()
    raw.close()
    before = sha(path)
    with pytest.raises(SessionError, match="newer overton") as info:
        Session.open(path)
    assert "Upgrade overton" in str(info.value)
    assert sha(path) == before
    raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # WAL was not switched on
    raw.close()


def test_refuses_unknown_migration_untouched(tmp_path):
    path = tmp_path / "future.db"
    make_session_file(path, n=1)
    raw = sqlite3.connect(path)
    raw.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                "VALUES ('overton', 'm999_future', '2030-01-01')")
    raw.commit()
    raw.close()
    before = sha(path)
    with pytest.raises(SessionError, match="newer overton"):
        Session.open(path)
    assert sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["future.db"]


def test_refuses_foreign_sqlite_database_untouched(tmp_path):
    path = tmp_path / "logs.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE responses (id TEXT PRIMARY KEY, body TEXT)")
    raw.execute("INSERT INTO responses VALUES ('a', 'b')")
    raw.commit()
    raw.close()
    before = sha(path)
    with pytest.raises(SessionError, match="not an overton session"):
        Session.open(path)
    assert sha(path) == before


def test_empty_file_is_initialised(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    with Session.open(path, create=False) as s:
        assert s.counts()["prompts"] == 0
    assert path.read_bytes().startswith(b"SQLite format 3\x00")


# --------------------------------------------------------------------------- concurrency


def test_threads_write_concurrently(tmp_path):
    n_threads, per_thread = 8, 40
    with Session.open(tmp_path / "s.db") as s:
        pid = s.add_prompt("shared prompt")
        barrier = threading.Barrier(n_threads)
        errors: list[BaseException] = []

        def worker(t: int) -> None:
            try:
                barrier.wait()
                for i in range(per_thread):
                    gid = s.add_generation(pid, condition=f"c{t}", sample_index=i, text=f"{t}-{i}")
                    s.add_metrics(pid, [{"name": "words", "condition": f"c{t}", "generation_id": gid, "value": i}])
                    s.generations(pid, condition=f"c{t}")
            except BaseException as e:  # noqa: BLE001 - surfaced below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert s.counts()["generations"] == n_threads * per_thread
        for t in range(n_threads):
            rows = s.generations(pid, condition=f"c{t}")
            assert [g["text"] for g in rows] == [f"{t}-{i}" for i in range(per_thread)]
        # each (name, condition) key was replaced on every write: one row per thread remains
        assert sorted((m["condition"], m["value"]) for m in s.metrics(pid)) == [
            (f"c{t}", per_thread - 1.0) for t in range(n_threads)
        ]


CHILD = """
import sys
from pathlib import Path
from engine.session import Session
path, n = Path(sys.argv[1]), int(sys.argv[2])
with Session.open(path, create=False) as s:
    pid = s.find_prompt("shared")["id"]
    print("ready", flush=True)
    for i in range(n):
        s.add_generation(pid, condition="child", sample_index=i, text=f"child-{i}")
        s.add_metrics(pid, [{"name": "words", "condition": "child", "value": i}])
"""


def test_second_process_writes_while_first_is_open(tmp_path):
    path = tmp_path / "s.db"
    n = 60
    with Session.open(path) as s:
        pid = s.add_prompt("q", external_id="shared")
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(n)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert child.stdout.readline().strip() == "ready"
        # Write from this process at the same time, holding our connection open throughout.
        for i in range(n):
            s.add_generation(pid, condition="parent", sample_index=i, text=f"parent-{i}")
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert [g["text"] for g in s.generations(pid, condition="child")] == [f"child-{i}" for i in range(n)]
        assert [g["text"] for g in s.generations(pid, condition="parent")] == [f"parent-{i}" for i in range(n)]
        assert s.counts() == {"prompts": 1, "hints": 0, "generations": 2 * n, "metrics": 1}
        assert s.metrics(pid)[0]["value"] == n - 1


def test_import_stays_light():
    code = (
        "import sys, engine.session; "
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers', 'textual') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- schema v2: embeddings, bulk writes


def make_v1_file(path: Path) -> None:
    """A session file as overton with schema 1 (before m002_embeddings) wrote it."""
    import sqlite_utils

    from engine.session import migrations

    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m002_embeddings")
    pid = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    db.execute("INSERT INTO prompts (id, external_id, text, created_at) VALUES (?, 'x1', 'old prompt', '2024-01-01T00:00:00.000+00:00')", [pid])
    db.execute("INSERT INTO generations (id, prompt_id, condition, text, created_at) VALUES ('g1', ?, 'base', 'old answer', '2024-01-01T00:00:00.000+00:00')", [pid])
    db.execute("PRAGMA user_version = 1")
    db.conn.commit()
    db.close()


def test_v1_file_is_upgraded(tmp_path):
    path = tmp_path / "v1.db"
    make_v1_file(path)
    raw = sqlite3.connect(path)
    assert "embeddings" not in {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    raw.close()
    with Session.open(path, create=False) as s:
        assert s.find_prompt("x1")["text"] == "old prompt"
        assert [g["text"] for g in s.generations()] == ["old answer"]
        assert s.embedding_models() == {}
        s.store_embeddings("m", {"old answer": [1.0, 0.0]})
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    names = [r[0] for r in raw.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
    assert names == ["m001_initial", "m002_embeddings", "m003_annotations", "m004_word_bags"]
    cols = {r[1]: (r[2], r[5]) for r in raw.execute("PRAGMA table_info(embeddings)")}
    assert cols == {"content_hash": ("TEXT", 1), "model_id": ("TEXT", 2), "dim": ("INTEGER", 0),
                    "vector": ("BLOB", 0), "created_at": ("TEXT", 0)}
    raw.close()


def test_embeddings_round_trip(tmp_path):
    import numpy as np

    from engine.session import content_hash

    with Session.open(tmp_path / "s.db") as s:
        n = s.store_embeddings("st:mini", {"a": [3.0, 4.0], "b": np.array([0.0, 2.0], dtype=np.float32), "": [1, 1]})
        assert n == 3
        s.store_embeddings("st:other", {"a": [1.0, 0.0]})
        got = s.embeddings_for("st:mini", ["a", "b", "missing", "a", ""])
        assert set(got) == {"a", "b", ""}
        assert got["a"].dtype == np.float32
        assert np.allclose(got["a"], [0.6, 0.8]) and np.allclose(got["b"], [0.0, 1.0])
        assert np.isclose(np.linalg.norm(got[""]), 1.0)
        assert np.allclose(s.embeddings_for("st:other", ["a"])["a"], [1.0, 0.0])
        assert s.embeddings_for("st:none", ["a"]) == {}
        s.store_embeddings("st:mini", {"a": [0.0, -5.0]})  # replaced, not duplicated
        assert np.allclose(s.embeddings_for("st:mini", ["a"])["a"], [0.0, -1.0])
        assert s.embedding_models() == {"st:mini": 3, "st:other": 1}
        with pytest.raises(ValueError, match="zero vector"):
            s.store_embeddings("st:mini", {"z": [0.0, 0.0]})
        with pytest.raises(ValueError, match="not finite"):
            s.store_embeddings("st:mini", {"z": [float("nan"), 1.0]})
        many = {f"text {i}": [1.0, float(i)] for i in range(1200)}  # more than one IN (...) chunk
        s.store_embeddings("st:mini", many)
        assert len(s.embeddings_for("st:mini", list(many))) == 1200
    raw = sqlite3.connect(tmp_path / "s.db")
    digest, dim, blob = raw.execute(
        "SELECT content_hash, dim, vector FROM embeddings WHERE model_id='st:other'").fetchone()
    assert digest == content_hash("a") == hashlib.sha256(b"a").hexdigest()
    assert dim == 2 and blob == np.array([1.0, 0.0], dtype="<f4").tobytes()
    raw.close()


def test_transaction_all_or_nothing_and_nesting(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        with pytest.raises(RuntimeError):
            with s.transaction():
                pid = s.add_prompt("p", external_id="e")
                s.add_generation(pid, condition="base", text="t")
                s.add_hint(pid, "h", source="user")
                raise RuntimeError("boom")
        assert s.counts() == {"prompts": 0, "hints": 0, "generations": 0, "metrics": 0}
        with s.transaction():
            pid = s.add_prompt("p", external_id="e")
            with pytest.raises(ValueError, match="already exists"):
                s.add_prompt("p again", external_id="e")  # only this inner write is undone
            with s.transaction():
                s.add_generation(pid, condition="base", text="t")
        assert s.counts() == {"prompts": 1, "hints": 0, "generations": 1, "metrics": 0}
        s.add_generation(pid, condition="base", text="after")  # the session still writes normally
        assert s.counts()["generations"] == 2


def test_add_generations_bulk_keeps_order_and_is_atomic(tmp_path):
    from engine.session import new_ids

    ids = new_ids(1000)
    assert ids == sorted(ids) and len(set(ids)) == 1000
    with Session.open(tmp_path / "s.db") as s:
        pid = s.add_prompt("p")
        stamp = "2025-01-01T00:00:00.000+00:00"
        rows = [{"prompt_id": pid, "condition": "c", "sample_index": i, "text": f"t{i}", "created_at": stamp,
                 "source": "imported", "finish_reason": "imported", "settings": {}, "meta": {"line": i}}
                for i in range(300)]
        got = s.add_generations_bulk(rows)
        assert got == sorted(got)
        stored = sorted(s.generations(pid), key=lambda r: (r["created_at"], r["id"]))
        assert [r["text"] for r in stored] == [f"t{i}" for i in range(300)]
        assert stored[5]["meta"] == {"line": 5} and stored[5]["settings"] == {}
        with pytest.raises(ValueError, match="finish_reason"):
            s.add_generations_bulk([{"prompt_id": pid, "condition": "c", "text": "ok"},
                                    {"prompt_id": pid, "condition": "c", "finish_reason": "bogus"}])
        with pytest.raises(ValueError, match="cannot add generation"):
            s.add_generations_bulk([{"prompt_id": pid, "condition": "c", "text": "ok"},
                                    {"prompt_id": "nope", "condition": "c", "text": "x"}])
        assert s.counts()["generations"] == 300


# --------------------------------------------------------------------------- schema v3: annotations, full-text search


def make_v2_file(path: Path) -> None:
    """A session file as overton with schema 2 (before m003_annotations) wrote it."""
    import sqlite_utils

    from engine.session import migrations

    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m003_annotations")
    stamp = "2024-01-01T00:00:00.000+00:00"
    db.execute("INSERT INTO prompts (id, external_id, text, created_at) VALUES ('P1', 'x1', 'Why do cats purr?', ?)",
               [stamp])
    db.execute("INSERT INTO generations (id, prompt_id, condition, text, created_at) "
               "VALUES ('G1', 'P1', 'base', 'Cats purr when content, and when healing.', ?)", [stamp])
    db.execute("INSERT INTO generations (id, prompt_id, condition, text, created_at) "
               "VALUES ('G2', 'P1', 'aligned', NULL, ?)", [stamp])
    db.execute("PRAGMA user_version = 2")
    db.conn.commit()
    db.close()


def test_v2_file_is_upgraded_with_annotations_and_search(tmp_path):
    from engine.annotations import Annotations
    from engine.search import search

    path = tmp_path / "v2.db"
    make_v2_file(path)
    with Session.open(path, create=False) as s:
        # the migration indexed the rows already there
        assert [(h["kind"], h["generation_id"]) for h in search(s, "healed")] == [("answer", "G1")]
        assert [(h["kind"], h["prompt_id"]) for h in search(s, "cats")][0] == ("prompt", "P1")
        a = Annotations(s, "ann")
        assert a.set_rating("G1", 4) == "base sample 0: rating 4"
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    names = [r[0] for r in raw.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
    assert names == ["m001_initial", "m002_embeddings", "m003_annotations", "m004_word_bags"]
    cols = {r[1]: (r[2], r[3], r[5]) for r in raw.execute("PRAGMA table_info(annotations)")}
    assert cols == {"id": ("TEXT", 0, 1), "prompt_id": ("TEXT", 1, 0), "generation_id": ("TEXT", 0, 0),
                    "annotator": ("TEXT", 1, 0), "kind": ("TEXT", 1, 0), "value": ("TEXT", 1, 0),
                    "manual": ("INTEGER", 1, 0), "created_at": ("TEXT", 1, 0), "deleted_at": ("TEXT", 0, 0)}
    indexes = {r[1] for r in raw.execute("PRAGMA index_list(annotations)")}
    assert {"idx_annotations_generation", "idx_annotations_prompt", "idx_annotations_live"} <= indexes
    assert raw.execute("SELECT prompt_id, generation_id, annotator, kind, value, manual, deleted_at "
                       "FROM annotations").fetchall() == [("P1", "G1", "ann", "rating", "4", 1, None)]
    # the full-text tables hold one row per indexed text (the NULL answer is left out)
    assert raw.execute("SELECT prompt_id FROM prompts_fts").fetchall() == [("P1",)]
    assert raw.execute("SELECT generation_id FROM generations_fts").fetchall() == [("G1",)]
    # plain SQLite tools can query the index
    assert raw.execute("SELECT generation_id FROM generations_fts WHERE generations_fts MATCH 'healing'"
                       ).fetchall() == [("G1",)]
    with pytest.raises(sqlite3.IntegrityError):  # kind is checked
        raw.execute("INSERT INTO annotations (id, prompt_id, annotator, kind, value, created_at) "
                    "VALUES ('x', 'P1', 'a', 'bogus', 'v', 'now')")
    raw.close()


def test_fts_follows_inserts_updates_deletes(tmp_path):
    from engine.search import search

    with Session.open(tmp_path / "s.db") as s:
        pid = s.add_prompt("Tell me about volcanoes", external_id="v")
        gid = s.add_generation(pid, condition="base", text="Magma rises through the crust.")
        s.add_generations_bulk([{"prompt_id": pid, "condition": "aligned", "sample_index": i,
                                 "text": f"Lava flows {i}"} for i in range(3)])
        assert [h["generation_id"] for h in search(s, "magma")] == [gid]
        assert len(search(s, "lava")) == 3
        assert search(s, "volcano")[0]["kind"] == "prompt"  # porter stemming: volcanoes ~ volcano
        with s.transaction():
            s.conn.execute("UPDATE generations SET text = 'Ash clouds form.' WHERE id = ?", [gid])
        assert search(s, "magma") == [] and [h["generation_id"] for h in search(s, "ash")] == [gid]
        with s.transaction():
            s.conn.execute("DELETE FROM generations WHERE condition = 'aligned'")
        assert search(s, "lava") == []
        # VACUUM renumbers implicit rowids; the index keys on ids, so hits still point right
        s.conn.execute("VACUUM")
        assert [h["generation_id"] for h in search(s, "ash")] == [gid]


def test_prompt_overview_and_listing(tmp_path):
    from engine.annotations import Annotations
    from engine.session import list_sessions, peek_session

    path = tmp_path / "a.db"
    with Session.open(path) as s:
        p1 = s.add_prompt("first", external_id="e1", created_at="2025-01-01T00:00:00.000+00:00")
        p2 = s.add_prompt("second", id="01FIXEDPROMPTID0000000000A", created_at="2025-01-02T00:00:00.000+00:00")
        g1 = s.add_generation(p1, condition="base", text="x", created_at="2025-01-01T00:01:00.000+00:00")
        s.add_generation(p1, condition="aligned", text="y", created_at="2025-01-01T00:02:00.000+00:00")
        s.add_generation(p1, condition="summary", text="a summary", created_at="2025-01-01T00:03:00.000+00:00")
        ann = Annotations(s, "ann")
        ann.set_rating(g1, 2)
        ann.toggle_label(g1, "helpful")
        ann.set_preference(p1, "aligned")
        Annotations(s, "bob").set_note(g1, "hm")
        rows = s.prompt_overview()
        assert [r["id"] for r in rows] == [p1, p2] and p2 == "01FIXEDPROMPTID0000000000A"
        first, second = rows
        assert first["conditions"] == ["aligned", "base"] and first["generations"] == 2
        assert first["last_generation_at"] == "2025-01-01T00:02:00.000+00:00"
        assert (first["annotations"], first["ratings"], first["labels"], first["notes"], first["preferences"],
                first["annotators"]) == (4, 1, 1, 1, 1, 2)
        assert second["conditions"] == [] and second["annotations"] == 0 and second["last_generation_at"] is None
    (tmp_path / "notes.db").write_text("not a database at all, just notes\n" * 10)
    (tmp_path / "ignored.txt").write_text("x")
    before = sha(path)
    infos = {i["name"]: i for i in list_sessions(tmp_path)}
    assert set(infos) == {"a.db", "notes.db"}
    a = infos["a.db"]
    # generations counts answers, as prompt_overview does: the hint summary is not one
    assert (a["schema"], a["prompts"], a["generations"], a["annotations"], a["error"]) == (SCHEMA_VERSION, 2, 2, 4, None)
    assert "not a SQLite database" in infos["notes.db"]["error"]
    assert sha(path) == before  # listing reads without writing
    assert list_sessions(tmp_path / "absent") == []
    old = tmp_path / "old.db"
    make_v2_file(old)
    before = sha(old)
    info = peek_session(old)
    assert (info["schema"], info["prompts"], info["annotations"], info["error"]) == (2, 1, 0, None)
    assert sha(old) == before  # not upgraded by a look


@pytest.mark.parametrize("query", ['"unbalanced', "re-run", "=cmd|' /C calc'!A0", "foo:bar", "NEAR(", "AND",
                                   "C++", "*", "@SUM(1)", "(", "'", "-", "   "])
def test_search_never_raises_on_user_syntax(tmp_path, query):
    from engine.search import search

    with Session.open(tmp_path / "s.db") as s:
        pid = s.add_prompt("How do I re-run =cmd|' /C calc'!A0 and @SUM(1)?")
        s.add_generation(pid, condition="base", text='Say "unbalanced" then foo bar.')
        hits = search(s, query)
        assert isinstance(hits, list)
        if query in ("re-run", "@SUM(1)", "=cmd|' /C calc'!A0"):  # searched as plain words instead
            assert [h["kind"] for h in hits] == ["prompt"]
        if query == '"unbalanced':
            assert [h["kind"] for h in hits] == ["answer"]


def test_search_hits_and_cli(tmp_path):
    import json

    from typer.testing import CliRunner

    from engine.search import search
    from tui.cli import app

    path = tmp_path / "s.db"
    with Session.open(path) as s:
        pid = s.add_prompt("What helps against a cold?", external_id="cold")
        gid = s.add_generation(pid, condition="aligned", sample_index=0, text="Rest and warm tea help.\nHoney too.")
        hit = search(s, "tea")[0]
        assert (hit["kind"], hit["prompt_id"], hit["external_id"], hit["generation_id"], hit["condition"],
                hit["sample_index"]) == ("answer", pid, "cold", gid, "aligned", 0)
        assert hit["prompt_text"] == "What helps against a cold?"
        assert [hit["snippet"][a:b] for a, b in hit["spans"]] == ["tea"]
        assert search(s, "tea", limit=0) == [] and search(s, "") == []
        assert len(search(s, "cold OR tea")) == 2 and search(s, "cold NOT tea")[0]["kind"] == "prompt"
    runner = CliRunner()
    r = runner.invoke(app, ["search", str(path), "honey", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [d["generation_id"] for d in data] == [gid] and data[0]["spans"] == [[24, 29]]
    r = runner.invoke(app, ["search", str(path), "[bold]x"])
    assert r.exit_code == 0 and "no prompt or answer" in r.stdout and "[bold]x" in r.stdout
    r = runner.invoke(app, ["search", str(tmp_path / "absent.db"), "x"])
    assert r.exit_code == 1 and "No session file" in r.stderr and not (tmp_path / "absent.db").exists()


def test_search_without_fts_tables_uses_like(tmp_path):
    from engine.search import has_fts, search

    with Session.open(tmp_path / "s.db") as s:
        pid = s.add_prompt("Is 100% cotton_wool warm?")
        s.add_generation(pid, condition="base", text="Cotton is warm; wool is warmer.")
        with s.transaction():  # as on an SQLite build without FTS5
            for name in ("prompts", "generations"):
                for suffix in ("ai", "ad", "au"):
                    s.conn.execute(f"DROP TRIGGER {name}_fts_{suffix}")
                s.conn.execute(f"DROP TABLE {name}_fts")
        assert not has_fts(s)
        assert [h["kind"] for h in search(s, "warm cotton")] == ["prompt", "answer"]
        assert [h["kind"] for h in search(s, "100%")] == ["prompt"]  # % and _ are literal
        assert [h["kind"] for h in search(s, "cotton_")] == ["prompt"]
        assert search(s, "Cotton_is") == []  # '_' is no wildcard: "Cotton is" does not match
        assert search(s, "wool cold") == []
        hit = search(s, "warmer")[0]
        assert [hit["snippet"][a:b] for a, b in hit["spans"]] == ["warmer"]
        s.add_generation(pid, condition="base", sample_index=1, text="still writable")


@pytest.mark.parametrize("text", ["../x", "a/b", "sub/dir/name", "~/notes"])
def test_new_paths_need_a_db_suffix(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SessionError, match="path ending in .db"):
        resolve_session_path(text, tmp_path / "sessions")
    assert list(tmp_path.iterdir()) == []


def test_peeking_at_an_open_session_keeps_its_locks(tmp_path):
    """Reading a live session's header with open()/close() would drop this process's POSIX
    locks: another process could then delete the WAL under us and writes would be lost."""
    import subprocess
    import sys

    from engine.session import list_sessions, peek_session

    path = tmp_path / "live.db"
    with Session.open(path) as s:
        s.add_prompt("one")
        assert peek_session(path)["prompts"] == 1
        assert [i["prompts"] for i in list_sessions(tmp_path)] == [1]
        # Another process opens and closes the file: it must not be able to take it over.
        other = f"import sqlite3; c = sqlite3.connect({str(path)!r}); c.execute('select count(*) from prompts').fetchone(); c.close()"
        subprocess.run([sys.executable, "-c", other], check=True)
        assert Path(f"{path}-wal").exists()
        s.add_prompt("two")
        out = subprocess.run([sys.executable, "-c",
                              f"import sqlite3; print(sqlite3.connect({str(path)!r}).execute('select count(*) from prompts').fetchone()[0])"],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "2"  # the other process sees our write

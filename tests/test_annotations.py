"""engine.annotations: ratings, labels, notes, preferences, undo, history, several annotators,
and their counts in engine.stats / `overton stats`."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from engine import annotations as ann
from engine.annotations import DEFAULT_LABELS, AnnotationConflict, AnnotationError, Annotations
from engine.session import Session
from engine.stats import compute_stats
from tui.cli import app

T = "2025-01-01T00:00:{:02d}.000+00:00"


@pytest.fixture
def s(tmp_path):
    session = Session.open(tmp_path / "a.db")
    session.add_prompt("Why is the sky blue?", external_id="sky", id="P1", created_at=T.format(0))
    session.add_prompt("Name a fruit.", external_id="fruit", id="P2", created_at=T.format(1))
    n = 2
    for pid in ("P1", "P2"):
        for cond in ("base", "aligned", "hinted"):
            for i in range(2):
                session.add_generation(pid, id=f"{pid}-{cond}-{i}", condition=cond, sample_index=i,
                                       text=f"{cond} answer {i}", created_at=T.format(n), finish_reason="stop")
                n += 1
    session.add_generation("P1", id="P1-summary", condition="summary", text="a hint", created_at=T.format(n))
    yield session
    session.close()


def live(session, gid=None):
    return [(r["annotator"], r["kind"], r["value"]) for r in ann.history(session, generation_id=gid)
            if r["deleted_at"] is None]


# --------------------------------------------------------------------------- ratings


def test_rating_set_change_remove_and_history(s):
    a = Annotations(s, "alice")
    assert a.current("P1-base-0") == {"rating": None, "labels": [], "note": None}
    assert a.set_rating("P1-base-0", 3) == "base sample 0: rating 3"
    assert a.set_rating("P1-base-0", "5") == "base sample 0: rating 3 → 5"  # a key press
    assert a.set_rating("P1-base-0", 5) is None  # unchanged: nothing written
    assert a.current("P1-base-0")["rating"] == 5
    rows = ann.history(s, generation_id="P1-base-0")
    assert [(r["value"], r["deleted_at"] is None) for r in rows] == [("3", False), ("5", True)]
    assert all(r["manual"] == 1 and r["annotator"] == "alice" and r["kind"] == "rating" for r in rows)
    assert all(r["prompt_id"] == "P1" for r in rows)
    assert rows[0]["deleted_at"] >= rows[1]["created_at"]  # the old row was retired by the edit
    assert a.set_rating("P1-base-0", None) == "base sample 0: rating 5 removed"
    assert a.current("P1-base-0")["rating"] is None
    assert len(ann.history(s, generation_id="P1-base-0")) == 2  # removal is a soft delete
    assert live(s) == []


@pytest.mark.parametrize("bad", [0, 6, -1, "x", "", 3.5, True, [4], "10"])
def test_rating_validation(s, bad):
    a = Annotations(s, "alice")
    with pytest.raises(AnnotationError, match="whole number from 1 to 5"):
        a.set_rating("P1-base-0", bad)
    assert ann.history(s) == []


def test_unknown_or_summary_generation(s):
    a = Annotations(s, "alice")
    with pytest.raises(AnnotationError, match="no answer with id 'nope'"):
        a.set_rating("nope", 3)
    with pytest.raises(AnnotationError, match="hint summary is not an answer"):
        a.toggle_label("P1-summary", "helpful")
    with pytest.raises(AnnotationError, match="no prompt with id 'P9'"):
        a.set_preference("P9", "base")
    assert ann.history(s) == [] and a.undo_depth == 0


# --------------------------------------------------------------------------- labels and notes


def test_labels_toggle_case_and_validation(s):
    a = Annotations(s, "alice")
    assert a.labels == DEFAULT_LABELS
    assert a.toggle_label("P1-base-0", "refusal") == "base sample 0: label 'refusal' added"
    assert a.toggle_label("P1-base-0", "Factual Error") == "base sample 0: label 'factual error' added"
    assert a.current("P1-base-0")["labels"] == ["refusal", "factual error"]  # in the label set's order
    assert a.toggle_label("P1-base-0", "REFUSAL") == "base sample 0: label 'refusal' removed"
    assert a.current("P1-base-0")["labels"] == ["factual error"]
    with pytest.raises(AnnotationError, match="unknown label 'funny'; the labels are: helpful, irrelevant"):
        a.toggle_label("P1-base-0", "funny")
    with pytest.raises(AnnotationError, match="empty"):
        a.toggle_label("P1-base-0", "  ")
    assert [r["value"] for r in ann.history(s)] == ["refusal", "factual error"]
    assert json.loads(s.meta()[ann.LABELS_META_KEY]) == list(DEFAULT_LABELS)  # stored with the first change


def test_custom_label_set_is_stored_and_reused(s):
    a = Annotations(s, "alice", labels=["clear", " vague ", "wrong"])
    assert a.labels == ("clear", "vague", "wrong")
    a.toggle_label("P1-base-0", "vague")
    assert json.loads(s.meta()[ann.LABELS_META_KEY]) == ["clear", "vague", "wrong"]
    b = Annotations(s, "bob")  # no labels given: the session's set
    assert b.labels == ("clear", "vague", "wrong")
    with pytest.raises(AnnotationError, match="unknown label 'helpful'"):
        b.toggle_label("P1-base-0", "helpful")
    # a label no longer in the set can still be removed
    c = Annotations(s, "alice", labels=["clear"])
    assert c.toggle_label("P1-base-0", "vague") == "base sample 0: label 'vague' removed"
    for bad in ([], ["a", "A"], ["ok", ""], "helpful", ["x\ty"]):
        with pytest.raises(AnnotationError):
            Annotations(s, "alice", labels=bad)


def test_notes(s):
    a = Annotations(s, "alice")
    assert a.set_note("P1-aligned-1", "  Too long,\nbut \"right\".  ") == "aligned sample 1: note added"
    assert a.current("P1-aligned-1")["note"] == "Too long,\nbut \"right\"."
    assert a.set_note("P1-aligned-1", "Too long,\nbut \"right\".") is None
    assert a.set_note("P1-aligned-1", "Shorter.") == "aligned sample 1: note edited"
    assert a.set_note("P1-aligned-1", "   ") == "aligned sample 1: note removed"
    assert a.current("P1-aligned-1")["note"] is None
    with pytest.raises(AnnotationError, match="too long"):
        a.set_note("P1-aligned-1", "x" * (ann.MAX_NOTE_CHARS + 1))
    assert [(r["value"], r["deleted_at"] is None) for r in ann.history(s)] == [
        ("Too long,\nbut \"right\".", False), ("Shorter.", False)]


# --------------------------------------------------------------------------- preferences


def test_preferences(s):
    a = Annotations(s, "alice")
    assert a.preference("P1") is None
    assert a.set_preference("P1", "hinted") == "prompt sky: preference hinted"
    assert a.set_preference("P1", "Tie") == "prompt sky: preference hinted → tie"
    assert a.set_preference("P1", "all bad") == "prompt sky: preference tie → all-bad"
    assert a.preference("P1") == "all-bad"
    with pytest.raises(AnnotationError, match=r"unknown condition 'icl' for this prompt; choose one of: "
                                              r"aligned, base, hinted, tie, all-bad"):
        a.set_preference("P1", "icl")
    with pytest.raises(AnnotationError, match="unknown condition 'summary'"):
        a.set_preference("P1", "summary")
    assert a.set_preference("P1", None) == "prompt sky: preference all-bad removed"
    assert a.preference("P1") is None
    rows = ann.history(s, prompt_id="P1")
    assert [r["value"] for r in rows] == ["hinted", "tie", "all-bad"] and all(r["deleted_at"] for r in rows)
    assert all(r["generation_id"] is None and r["kind"] == "preference" for r in rows)


# --------------------------------------------------------------------------- undo


def test_undo_walks_back_a_chain(s):
    a = Annotations(s, "alice")
    assert a.undo() is None  # nothing yet
    a.set_rating("P1-base-0", 2)
    a.set_rating("P1-base-0", 4)
    a.toggle_label("P1-base-0", "helpful")
    a.set_note("P1-base-0", "good")
    a.set_preference("P1", "base")
    a.toggle_label("P1-base-0", "helpful")  # off again
    assert a.undo_depth == 6
    assert a.undo() == "base sample 0: label 'helpful' removed"
    assert a.current("P1-base-0") == {"rating": 4, "labels": ["helpful"], "note": "good"}
    assert a.undo() == "prompt sky: preference base"
    assert a.preference("P1") is None
    assert a.undo() == "base sample 0: note added"
    assert a.undo() == "base sample 0: label 'helpful' added"
    assert a.current("P1-base-0") == {"rating": 4, "labels": [], "note": None}
    assert a.undo() == "base sample 0: rating 2 → 4"
    assert a.current("P1-base-0")["rating"] == 2  # the old row restored
    assert a.undo() == "base sample 0: rating 2"
    assert a.current("P1-base-0")["rating"] is None
    assert a.undo() is None and a.undo_depth == 0
    # history keeps every row ever written; none is live now
    rows = ann.history(s)
    assert len(rows) == 5 and all(r["deleted_at"] is not None for r in rows)  # 2 ratings, label, note, pref.
    # and the session writes normally after
    a.set_rating("P1-base-0", 1)
    assert live(s) == [("alice", "rating", "1")]


def test_undo_is_per_object_and_per_annotator(s):
    a, b = Annotations(s, "alice"), Annotations(s, "bob")
    a.set_rating("P1-base-0", 5)
    b.set_rating("P1-base-0", 1)
    assert b.undo() == "base sample 0: rating 1"
    assert a.current("P1-base-0")["rating"] == 5 and b.current("P1-base-0")["rating"] is None
    assert b.undo() is None


def test_undo_conflict_when_changed_elsewhere(s):
    mine, elsewhere = Annotations(s, "alice"), Annotations(s, "alice")  # e.g. two windows
    mine.set_rating("P1-base-0", 3)
    mine.set_note("P1-base-0", "first")
    elsewhere.set_rating("P1-base-0", 4)  # retires mine's rating row
    assert mine.undo() == "base sample 0: note added"
    with pytest.raises(AnnotationConflict, match="cannot undo .*rating 3.*changed since"):
        mine.undo()
    assert mine.current("P1-base-0")["rating"] == 4  # untouched
    assert mine.undo() is None  # the impossible change was dropped


def test_live_uniqueness_is_enforced_by_the_schema(s):
    Annotations(s, "alice").set_rating("P1-base-0", 3)
    with pytest.raises(sqlite3.IntegrityError):
        with s.transaction():
            s.conn.execute("INSERT INTO annotations (id, prompt_id, generation_id, annotator, kind, value, created_at) "
                           "VALUES ('dup', 'P1', 'P1-base-0', 'alice', 'rating', '4', 'now')")


# --------------------------------------------------------------------------- annotators, persistence


def test_annotator_names(s, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "login-name")
    a = Annotations(s)
    assert a.annotator == "login-name"
    a.set_rating("P1-base-0", 3)
    assert live(s) == [("login-name", "rating", "3")]
    assert Annotations(s, "  padded ").annotator == "padded"
    for bad in ("", "   ", "a\nb", "x" * 101):
        with pytest.raises(AnnotationError, match="annotator name"):
            Annotations(s, bad)

    def no_user():
        raise OSError("no login")

    monkeypatch.setattr("getpass.getuser", no_user)
    assert Annotations(s).annotator == "anonymous"


def test_two_annotators_counts_and_persistence(tmp_path, s):
    a, b = Annotations(s, "alice"), Annotations(s, "bob")
    a.set_rating("P1-base-0", 4)
    a.toggle_label("P1-base-0", "helpful")
    a.set_note("P1-hinted-1", "close to aligned")
    a.set_preference("P1", "hinted")
    b.set_rating("P1-base-0", 2)
    b.toggle_label("P1-base-0", "repetitive")
    b.set_preference("P1", "tie")
    b.set_rating("P2-aligned-0", 5)
    assert a.current("P1-base-0") == {"rating": 4, "labels": ["helpful"], "note": None}
    assert b.current("P1-base-0") == {"rating": 2, "labels": ["repetitive"], "note": None}
    assert a.current("P1-base-0", annotator="bob")["rating"] == 2
    assert a.for_prompt("P1") == {
        "P1-base-0": {"rating": 4, "labels": ["helpful"], "note": None},
        "P1-hinted-1": {"rating": None, "labels": [], "note": "close to aligned"},
    }
    assert a.counts("P1") == {"annotations": 7, "ratings": 2, "labels": 2, "notes": 1, "preferences": 2,
                              "annotators": 2}
    assert a.counts("P2") == {"annotations": 1, "ratings": 1, "labels": 0, "notes": 0, "preferences": 0,
                              "annotators": 1}
    assert set(ann.prompt_counts(s)) == {"P1", "P2"}
    assert ann.annotators(s) == ["alice", "bob"]
    path = s.path
    s.close()

    with Session.open(path, create=False) as again:
        a2 = Annotations(again, "alice")
        assert a2.current("P1-base-0") == {"rating": 4, "labels": ["helpful"], "note": None}
        assert a2.current("P1-hinted-1")["note"] == "close to aligned"
        assert a2.preference("P1") == "hinted" and a2.preference("P1", annotator="bob") == "tie"
        assert a2.undo() is None  # undo covers this object's own changes only
        assert a2.counts("P1")["annotations"] == 7


# --------------------------------------------------------------------------- statistics and agreement


@pytest.fixture
def three(s):
    """alice, bob and carol; values below are worked out by hand in the tests."""
    a, b, c = Annotations(s, "alice"), Annotations(s, "bob"), Annotations(s, "carol")
    a.set_rating("P1-base-0", 4)
    b.set_rating("P1-base-0", 4)
    c.set_rating("P1-base-0", 2)
    a.set_rating("P1-base-1", 3)
    b.set_rating("P1-base-1", 2)
    a.set_rating("P1-aligned-0", 5)
    a.toggle_label("P1-base-0", "helpful")
    b.toggle_label("P1-base-0", "helpful")
    b.toggle_label("P1-base-0", "repetitive")
    b.toggle_label("P1-base-1", "refusal")
    b.set_note("P1-hinted-0", "odd")
    a.set_preference("P1", "aligned")
    b.set_preference("P1", "aligned")
    c.set_preference("P1", "tie")
    return s


def test_condition_summary_and_stats(three):
    summary = ann.condition_summary(three)
    assert summary["base"] == {"ratings": 5, "mean_rating": 3.0, "rating_counts": [0, 2, 1, 2, 0], "rated_samples": 2,
                               "label_counts": {"helpful": 2, "refusal": 1, "repetitive": 1}, "notes": 0,
                               "preference_wins": 0}
    assert summary["aligned"]["mean_rating"] == 5.0 and summary["aligned"]["preference_wins"] == 2
    assert summary["hinted"]["notes"] == 1 and summary["hinted"]["ratings"] == 0
    assert ann.preference_totals(three) == {"prompts": 1, "preferences": 3, "tie": 1, "all-bad": 0}

    st = compute_stats(three)
    base, aligned = st.row("base"), st.row("aligned")
    assert (base.ratings, base.mean_rating, base.rating_counts, base.rated_samples) == (5, 3.0, [0, 2, 1, 2, 0], 2)
    assert base.label_counts == {"helpful": 2, "refusal": 1, "repetitive": 1}
    assert (aligned.ratings, aligned.mean_rating, aligned.preference_wins) == (1, 5.0, 2)
    assert st.row("hinted").mean_rating is None and st.row("hinted").notes == 1
    assert st.annotators == ["alice", "bob", "carol"]
    assert st.preferences["tie"] == 1
    data = {d["condition"]: d for d in json.loads(st.to_json())}
    assert data["base"]["mean_rating"] == 3.0 and data["base"]["rating_counts"] == [0, 2, 1, 2, 0]


def test_agreement_by_hand(three):
    a = ann.agreement(three)
    assert a["annotators"] == ["alice", "bob", "carol"]
    # ratings: base-0 (4, 4, 2): diffs 0, 2, 2; base-1 (3, 2): 1
    assert a["ratings"] == {"generations": 2, "pairs": 4, "exact": 0.25, "within_one": 0.5, "mean_abs_diff": 1.25}
    # labels, over annotator pairs on answers both annotated: base-0 ab, ac, bc; base-1 ab
    assert a["labels"]["items"] == 4 and a["labels"]["exact"] == 0.0
    per = a["labels"]["per_label"]
    assert set(per) == {"helpful", "refusal", "repetitive"}
    assert per["helpful"]["observed"] == 0.5
    assert per["helpful"]["kappa"] == pytest.approx((1 + 0 + 0) / 3)  # ab: 1, ac: 0, bc: 0
    assert per["repetitive"] == {"observed": 0.5, "kappa": 0.0}  # ac undefined, ab 0, bc 0
    assert per["refusal"] == {"observed": 0.75, "kappa": 0.0}
    # preferences: aligned, aligned, tie
    assert a["preferences"]["prompts"] == 1 and a["preferences"]["pairs"] == 3
    assert a["preferences"]["exact"] == pytest.approx(1 / 3)


def test_agreement_with_one_annotator_is_empty(s):
    Annotations(s, "alice").set_rating("P1-base-0", 3)
    a = ann.agreement(s)
    assert a["ratings"] == {"generations": 0, "pairs": 0, "exact": None, "within_one": None, "mean_abs_diff": None}
    assert a["labels"] == {"items": 0, "exact": None, "per_label": {}}
    assert a["preferences"]["exact"] is None


def test_stats_cli_shows_annotations(three):
    path = str(three.path)
    r = CliRunner().invoke(app, ["stats", path])
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "annotations by 3 annotators (alice, bob, carol)" in out
    assert "helpful 2, refusal 1, repetitive 1" in out
    assert "3.00" in out and "5.00" in out
    assert "tie 1" in out and "exact 25%" in out
    r = CliRunner().invoke(app, ["stats", path, "--json"])
    data = {d["condition"]: d for d in json.loads(r.stdout)}
    assert data["base"]["ratings"] == 5 and data["aligned"]["preference_wins"] == 2

"""engine.stats and `overton stats` on small hand-made sessions with values worked out by hand.

Texts are made of distinct content words (no stopwords, no punctuation besides the bullets), so
each word bag is simply the set of words; every expected value below is a fraction worked out
from the definitions in BRIEF.md.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from engine.session import Session
from engine.stats import StatsError, compute_stats, gap_closed
from tui.cli import app

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
ABSTAIN = "As an AI language model, I cannot"  # 7 words; an abstention


class Clock:
    def __init__(self):
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return (T0 + timedelta(seconds=self.n)).isoformat(timespec="milliseconds")


def add(s: Session, clock: Clock, pid: str, condition: str, texts, finish: str = "stop") -> None:
    for i, text in enumerate(texts):
        s.add_generation(pid, condition=condition, sample_index=i, text=text, created_at=clock(),
                         finish_reason=finish)


def build(path) -> Session:
    s = Session.open(path)
    c = Clock()
    p1 = s.add_prompt("one", external_id="p1")
    p2 = s.add_prompt("two", external_id="p2")
    p3 = s.add_prompt("three", external_id="p3")
    # P1
    add(s, c, p1, "aligned", ["alpha bravo charlie delta", "alpha bravo echo foxtrot"])
    add(s, c, p1, "base", ["alpha xray", "bravo xray", "zulu"])
    add(s, c, p1, "hinted", ["alpha bravo charlie", "alpha bravo delta"])
    s.add_generation(p1, condition="hinted", sample_index=2, text="zulu yankee", created_at=c(),
                     finish_reason="cancelled")  # cancelled: left out
    add(s, c, p1, "summary", ["a summary is not a condition"])
    add(s, c, p1, "listy", ["1. one\n2. two", "plain"])
    # P2: an older base batch that a newer one replaces
    add(s, c, p2, "base", ["older batch", "never counted", "at all"])
    add(s, c, p2, "aligned", ["golf hotel", "- golf\n- hotel"])
    add(s, c, p2, "base", ["golf kilo", "kilo"])
    add(s, c, p2, "hinted", ["golf hotel", "golf"])
    # P3: no aligned answer, so it counts for words, diversity and flags, not for similarity
    add(s, c, p3, "base", [ABSTAIN])
    return s


@pytest.fixture
def session(tmp_path):
    s = build(tmp_path / "hand.db")
    yield s
    s.close()


def approx(x):
    return pytest.approx(x, abs=1e-12)


def test_hand_computed_values(session):
    st = compute_stats(session)
    assert (st.reference, st.base, st.prompts) == ("aligned", "base", 3)
    assert [r.condition for r in st.rows] == ["base", "hinted", "listy", "aligned"]  # base first, reference last
    base, hinted, listy, aligned = st.rows

    # base: P1 {AX, BX, Z}, P2 {GK, K} against aligned s0 ABCD / GH; P3 has no reference.
    assert (base.prompts, base.samples, base.compared_prompts) == (3, 6, 2)
    assert base.mean_words == approx((2 + 2 + 1 + 2 + 1 + 7) / 6)
    assert base.diversity == approx((1 / 9 + 1 / 2) / 2)  # P1 (1/3+0+0)/3, P2 1/2, P3 (one sample) skipped
    assert base.similarity == approx((2 / 15 + 1 / 6) / 2)  # P1 (1/5+1/5+0)/3, P2 (1/3+0)/2
    assert base.coverage == approx((1 / 3 + 1 / 4) / 2)
    assert base.abstain_rate == approx(1 / 6) and base.numbered_list_rate == 0 and base.bullet_list_rate == 0
    assert base.is_base and not base.is_reference

    # aligned: the ceiling, s1 against s0
    assert (aligned.prompts, aligned.samples, aligned.compared_prompts) == (2, 4, 2)
    assert aligned.mean_words == approx((4 + 4 + 2 + 4) / 4)
    assert aligned.similarity == approx((1 / 3 + 1) / 2)
    assert aligned.coverage == approx((1 / 2 + 1) / 2)
    assert aligned.diversity == approx((1 / 3 + 1) / 2)
    assert aligned.bullet_list_rate == approx(1 / 4)
    assert aligned.is_reference

    # hinted: the cancelled third sample is not counted
    assert (hinted.prompts, hinted.samples) == (2, 4)
    assert hinted.mean_words == approx(9 / 4)
    assert hinted.similarity == approx(3 / 4)
    assert hinted.coverage == approx(1.0)
    assert hinted.diversity == approx(1 / 2)

    assert listy.numbered_list_rate == approx(1 / 2)

    # gap closed: (sim - sim(base)) / (ceiling - sim(base)) = (3/4 - 3/20) / (2/3 - 3/20) = 36/31
    assert hinted.gap_closed == approx(36 / 31)
    assert base.gap_closed == approx(0.0) and aligned.gap_closed == approx(1.0)
    assert gap_closed(0.5, 0.2, 0.2) is None and gap_closed(None, 0.1, 0.3) is None

    # information aggregation of base (P1: AX, BX, Z; P2: GK, K):
    #   in aligned s0  P1 (1/2+1/2+0)/3 = 1/3,   P2 (1/2+0)/2 = 1/4
    #   in 1 other     P1 (1/4+1/4+0)/3 = 1/6,   P2 (1/2+1)/2 = 3/4
    #   in all others  P1 (1/2+1/2+0)/3 = 1/3,   P2 (1/2+1)/2 = 3/4
    agg = st.aggregation
    assert agg.condition == "base"
    assert agg.in_reference == approx(7 / 24)
    assert agg.in_one_other == approx(11 / 24)
    assert agg.in_union_others == approx(13 / 24)
    assert aligned.info_in_reference is None  # not defined for the reference itself

    # no embeddings stored: None, with the number of texts missing
    assert base.embedding_similarity is None and base.embeddings_missing == 7  # 5 samples + 2 references


def test_embedding_similarity_from_stored_vectors(session):
    model = "test:emb"
    vec = {
        "alpha bravo charlie delta": [1, 0], "golf hotel": [1, 0],  # the references
        "alpha bravo echo foxtrot": [0, 1], "- golf\n- hotel": [2, 0],  # ceiling (0 + 1) / 2
        "alpha bravo charlie": [3, 4], "alpha bravo delta": [5, 0], "golf": [0, 3],  # hinted: (0.8 + 0.5) / 2
        "alpha xray": [1, 1], "bravo xray": [1, 1], "golf kilo": [1, 0], "kilo": [0, 1],  # base: "zulu" missing
    }
    session.store_embeddings(model, vec)
    st = compute_stats(session, embedding_model=model)
    rows = {r.condition: r for r in st.rows}
    assert st.embedding_model == model
    assert rows["aligned"].embedding_similarity == pytest.approx(0.5, abs=1e-6)
    assert rows["aligned"].embeddings_missing == 0
    assert rows["hinted"].embedding_similarity == pytest.approx(((0.6 + 1.0) / 2 + (1.0 + 0.0) / 2) / 2, abs=1e-6)
    assert rows["base"].embedding_similarity is None and rows["base"].embeddings_missing == 1
    # with only one embedder stored, it is picked by default
    assert compute_stats(session).embedding_model == model
    session.store_embeddings(model, {"zulu": [1, 0]})
    base = compute_stats(session).row("base")
    expected = ((2 ** -0.5 + 2 ** -0.5 + 1) / 3 + (1 + 0) / 2) / 2
    assert base.embedding_similarity == pytest.approx(expected, abs=1e-6) and base.embeddings_missing == 0


def test_reference_and_base_options(session):
    st = compute_stats(session, reference="hinted", base="aligned")
    rows = {r.condition: r for r in st.rows}
    assert [r.condition for r in st.rows][0] == "aligned" and st.rows[-1].condition == "hinted"
    # hinted ceiling: P1 J(ABD, ABC) = 1/2, P2 J(G, GH) = 1/2
    assert rows["hinted"].similarity == approx(1 / 2)
    # Here the base (aligned) is already closer to the reference than the ceiling is, so there
    # is no gap to close: gap_closed is undefined rather than a negative-denominator ratio.
    assert rows["aligned"].similarity > rows["hinted"].similarity
    assert rows["aligned"].gap_closed is None and rows["hinted"].gap_closed is None
    assert st.aggregation.condition == "aligned"
    with pytest.raises(StatsError, match="reference condition 'nope'"):
        compute_stats(session, reference="nope")
    with pytest.raises(StatsError, match="base condition 'nope'"):
        compute_stats(session, base="nope")


def test_without_base_condition_gap_is_none(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        pid = s.add_prompt("p")
        add(s, Clock(), pid, "aligned", ["alpha bravo", "alpha"])
        add(s, Clock(), pid, "other", ["alpha"])
        st = compute_stats(s)
        assert st.base is None and st.aggregation is None
        assert all(r.gap_closed is None for r in st.rows)
        assert st.row("other").similarity == approx(1 / 2)


def test_empty_session(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        st = compute_stats(s)
        assert st.rows == [] and json.loads(st.to_json()) == []


# --------------------------------------------------------------------------- CLI

KEYS = {"condition", "prompts", "samples", "mean_words", "diversity", "similarity", "coverage",
        "embedding_similarity", "gap_closed", "abstain_rate", "numbered_list_rate", "bullet_list_rate"}


def test_cli_json(session):
    r = CliRunner().invoke(app, ["stats", str(session.path), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)  # nothing but JSON on stdout
    assert isinstance(data, list) and [d["condition"] for d in data] == ["base", "hinted", "listy", "aligned"]
    for d in data:
        assert KEYS <= set(d)
        for key in KEYS - {"condition"}:
            assert d[key] is None or (isinstance(d[key], (int, float)) and not isinstance(d[key], bool)), (key, d[key])
        assert isinstance(d["prompts"], int) and isinstance(d["samples"], int)
    hinted = data[1]
    assert hinted["similarity"] == pytest.approx(0.75) and hinted["gap_closed"] == pytest.approx(36 / 31)
    assert data[0]["embedding_similarity"] is None
    assert r.stderr == ""


def test_cli_table(session):
    r = CliRunner().invoke(app, ["stats", str(session.path), "--base", "base", "--reference", "aligned"])
    assert r.exit_code == 0, r.output
    out = r.stdout
    for word in ("condition", "hinted", "aligned*", "0.750", "1.161", "abstain", "17%", "overton embed"):
        assert word in out, word


def test_cli_markup_in_condition_names_is_literal(tmp_path):
    with Session.open(tmp_path / "s.db") as s:
        pid = s.add_prompt("p")
        add(s, Clock(), pid, "aligned", ["alpha bravo", "alpha"])
        add(s, Clock(), pid, "[red]x[/red]", ["alpha"])
    r = CliRunner().invoke(app, ["stats", str(tmp_path / "s.db")])
    assert r.exit_code == 0, r.output
    assert "[red]x[/red]" in r.stdout


def test_cli_errors(session, tmp_path, monkeypatch):
    runner = CliRunner()
    r = runner.invoke(app, ["stats", str(session.path), "--reference", "nope"])
    assert r.exit_code == 1 and "reference condition 'nope'" in r.stderr and "Traceback" not in r.output
    assert r.stdout == ""
    r = runner.invoke(app, ["stats", str(session.path), "--base", "nope", "--json"])
    assert r.exit_code == 1 and "base condition 'nope'" in r.stderr and r.stdout == ""

    monkeypatch.setenv("OVERTON_SESSIONS_DIR", str(tmp_path / "sessions"))
    r = runner.invoke(app, ["stats", "typo"])
    assert r.exit_code == 1 and "No session file" in r.stderr
    assert not (tmp_path / "sessions" / "typo.db").exists()
    r = runner.invoke(app, ["stats", str(tmp_path / "absent.db"), "--json"])
    assert r.exit_code == 1 and r.stdout == "" and not (tmp_path / "absent.db").exists()


def test_cli_by_session_name(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERTON_SESSIONS_DIR", str(tmp_path))
    build(tmp_path / "pilot.db").close()
    r = CliRunner().invoke(app, ["stats", "pilot", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 4


def test_cli_embed_then_stats(tmp_path):
    """`overton embed` stores the missing vectors with the trio's embedder; stats then uses them."""
    db = tmp_path / "s.db"  # the default embedder is part of the test install (README)
    with Session.open(db) as s:
        pid = s.add_prompt("What helps a cold?")
        c = Clock()
        add(s, c, pid, "aligned", ["Rest, fluids and honey help a cold.", "Drink fluids and rest."])
        add(s, c, pid, "base", ["Honey and rest.", "Buy a new car."])
    runner = CliRunner()
    r = runner.invoke(app, ["embed", str(db)])
    assert r.exit_code == 0, r.output
    assert "stored 5 embeddings" in " ".join(r.stdout.split())  # 4 answers + the prompt
    r = runner.invoke(app, ["embed", str(db)])
    assert r.exit_code == 0 and "already have embeddings" in r.stdout
    data = {d["condition"]: d for d in json.loads(runner.invoke(app, ["stats", str(db), "--json"]).stdout)}
    assert data["aligned"]["embeddings_missing"] == 0
    assert 0.3 < data["aligned"]["embedding_similarity"] <= 1.0
    assert -1.0 <= data["base"]["embedding_similarity"] < data["aligned"]["embedding_similarity"]
    r = runner.invoke(app, ["embed", str(tmp_path / "absent.db")])
    assert r.exit_code == 1 and "No session file" in r.stderr and not (tmp_path / "absent.db").exists()

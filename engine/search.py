"""Full-text search over a session's prompts and answers (SQLite FTS5, schema v3).

``search(session, query, limit)`` runs the user's query as FTS5 syntax (words are ANDed;
``"a phrase"``, ``tea*``, ``OR``, ``NOT`` work; stemming: "drinks" finds "drink"). Text that is
not valid FTS5 syntax (``re-run``, ``C++``, an unbalanced quote, ``=cmd|``) never reaches the
user as an SQLite error: it is searched again as plain words, each quoted. Session files
without the FTS tables (an SQLite build lacking FTS5) are searched with LIKE instead.

Each hit is a dict: ``kind`` ('prompt' | 'answer'), ``prompt_id``, ``external_id``,
``prompt_text``, ``generation_id``, ``condition`` and ``sample_index`` (None for a prompt),
``snippet`` (plain text around the match, at most ~``SNIPPET_TOKENS`` words, '…' where cut),
``spans`` (``[(start, end)]`` offsets of the matched terms in ``snippet``, for highlighting)
and ``created_at``. Best matches first (bm25), prompts before answers on ties.
"""

from __future__ import annotations

import re
import sqlite3

from engine.session import Session

SNIPPET_TOKENS = 16
DEFAULT_LIMIT = 50
_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use marks around matches, turned into spans
_WORD = re.compile(r"\w+", re.UNICODE)


def has_fts(session: Session) -> bool:
    with session.lock:
        names = {r[0] for r in session.conn.execute(
            "SELECT name FROM sqlite_master WHERE name IN ('prompts_fts', 'generations_fts')")}
    return names == {"prompts_fts", "generations_fts"}


def quote_query(query: str) -> str:
    """The query as plain words: each run of word characters a quoted FTS5 string, ANDed."""
    return " ".join(f'"{w}"' for w in _WORD.findall(query))


def search(session: Session, query: str, limit: int = DEFAULT_LIMIT) -> list[dict]:
    """Prompts and answers matching ``query`` (see the module docstring); [] for a blank query."""
    query = (query or "").strip()
    if not query or limit <= 0:
        return []
    if not has_fts(session):
        return _like_search(session, query, limit)
    try:
        return _fts_search(session, query, limit)
    except sqlite3.OperationalError:
        # not FTS5 syntax (or a column filter that does not exist): search the words instead
        plain = quote_query(query)
        if not plain:
            return []
        try:
            return _fts_search(session, plain, limit)
        except sqlite3.OperationalError:
            return []


_FTS_SQL = f"""
SELECT * FROM (
    SELECT 'prompt' AS kind, p.id AS prompt_id, p.external_id, p.text AS prompt_text,
           NULL AS generation_id, NULL AS condition, NULL AS sample_index, p.created_at,
           snippet(prompts_fts, 0, '{_OPEN}', '{_CLOSE}', '…', {SNIPPET_TOKENS}) AS snippet,
           bm25(prompts_fts) AS rank, 0 AS kind_order
      FROM prompts_fts JOIN prompts p ON p.id = prompts_fts.prompt_id
     WHERE prompts_fts MATCH :q
    UNION ALL
    SELECT 'answer', p.id, p.external_id, p.text, g.id, g.condition, g.sample_index, g.created_at,
           snippet(generations_fts, 0, '{_OPEN}', '{_CLOSE}', '…', {SNIPPET_TOKENS}),
           bm25(generations_fts), 1
      FROM generations_fts JOIN generations g ON g.id = generations_fts.generation_id
      JOIN prompts p ON p.id = g.prompt_id
     WHERE generations_fts MATCH :q
)
ORDER BY rank, kind_order, created_at, coalesce(generation_id, prompt_id)
LIMIT :limit
"""


def _fts_search(session: Session, query: str, limit: int) -> list[dict]:
    rows = session._select(_FTS_SQL, {"q": query, "limit": int(limit)})
    for row in rows:
        row["snippet"], row["spans"] = _spans(row["snippet"] or "")
        row.pop("kind_order", None)
        row.pop("rank", None)
    return rows


def _spans(marked: str) -> tuple[str, list[tuple[int, int]]]:
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    pos, start = 0, None
    for ch in marked:
        if ch == _OPEN:
            start = pos
        elif ch == _CLOSE:
            if start is not None:
                spans.append((start, pos))
            start = None
        else:
            out.append(ch)
            pos += 1
    return "".join(out), spans


def _like_search(session: Session, query: str, limit: int) -> list[dict]:
    """Without FTS: every word of the query must occur (case-insensitively for ASCII)."""
    words = _WORD.findall(query) or [query]
    rows: list[dict] = []
    for kind, sql in (
        ("prompt", "SELECT p.id AS prompt_id, p.external_id, p.text AS prompt_text, NULL AS generation_id, "
                   "NULL AS condition, NULL AS sample_index, p.created_at, p.text AS body FROM prompts p"),
        ("answer", "SELECT p.id AS prompt_id, p.external_id, p.text AS prompt_text, g.id AS generation_id, "
                   "g.condition, g.sample_index, g.created_at, g.text AS body "
                   "FROM generations g JOIN prompts p ON p.id = g.prompt_id"),
    ):
        where = " AND ".join("body LIKE ? ESCAPE '\\'" for _ in words)
        params = ["%" + w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for w in words]
        found = session._select(f"SELECT * FROM ({sql}) WHERE {where} ORDER BY created_at LIMIT ?",
                                [*params, limit])
        for r in found:
            body = r.pop("body") or ""
            r["kind"] = kind
            r["snippet"], r["spans"] = _like_snippet(body, words)
        rows.extend(found)
    return rows[:limit]


def _like_snippet(text: str, words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    low = text.lower()
    first = min((i for i in (low.find(w.lower()) for w in words) if i >= 0), default=0)
    start = max(0, first - 40)
    piece = text[start:start + 120]
    snippet = ("…" if start else "") + piece + ("…" if start + 120 < len(text) else "")
    spans = []
    for w in words:
        for m in re.finditer(re.escape(w), snippet, re.IGNORECASE):
            spans.append((m.start(), m.end()))
    return snippet, sorted(spans)

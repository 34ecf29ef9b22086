"""Hand-made annotations of answers: ratings, labels, notes, and a preferred pane per prompt.

Stored in the session's ``annotations`` table (schema v3, ``m003_annotations``), one row per
value: ``kind`` 'rating' (value '1'..'5'), 'label' (one row per label), 'note' (the text) or
'preference' (prompt level, ``generation_id`` NULL; a condition name, 'tie' or 'all-bad'),
with the ``annotator``, ``manual`` = 1 and ``created_at``. Nothing is ever overwritten or
deleted: a change marks the row it replaces as deleted (``deleted_at``) and inserts a new one,
so the table is the full history, and undo restores. The live state is the rows whose
``deleted_at`` is NULL (a partial unique index keeps at most one live rating, note and
preference per annotator and target, and one live row per label).

``Annotations(session, annotator)`` is the editing API for one annotator (default: the login
name); every change is one short transaction, saved at once. ``undo()`` walks back this
object's own changes, newest first. The module functions read everyone's annotations, for the
statistics (``condition_summary``, ``agreement``), the export and a session browser
(``prompt_counts``, ``history``).

Light: sqlite only, never torch or textual.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Iterable

from engine.averages import mean
from engine.session import Session, new_id, now_iso, where_equal

DEFAULT_LABELS = ("helpful", "irrelevant", "refusal", "repetitive", "off-topic", "factual error")
TIE, ALL_BAD = "tie", "all-bad"
PREFERENCE_SPECIAL = (TIE, ALL_BAD)
RATINGS = (1, 2, 3, 4, 5)
LABELS_META_KEY = "annotation_labels"  # sessions_meta: JSON list of the label set in use
MAX_NOTE_CHARS = 20_000
MAX_NAME_CHARS = 100  # annotator and label names


class AnnotationError(ValueError):
    """A value the user can fix (rating out of range, unknown label ...); show the message."""


class AnnotationConflict(AnnotationError):
    """An undo that cannot apply because the same values were changed elsewhere since."""


def default_annotator() -> str:
    """The login name (``getpass.getuser()``), or 'anonymous' where there is none."""
    try:
        import getpass  # on first use: it pulls in termios

        name = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        name = ""
    name = (name or "").strip()
    return name[:MAX_NAME_CHARS] if name and _clean_name(name) else "anonymous"


def _clean_name(text: str) -> bool:
    return not any(ord(c) < 32 or ord(c) == 127 for c in text)


def check_annotator(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise AnnotationError("the annotator name is empty; give a name such as your initials")
    name = name.strip()
    if not _clean_name(name):
        raise AnnotationError(f"the annotator name {name!r} contains control characters")
    if len(name) > MAX_NAME_CHARS:
        raise AnnotationError(f"the annotator name is too long ({len(name)} characters, max {MAX_NAME_CHARS})")
    return name


def check_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """A label set: names stripped, non-empty, printable, unique ignoring case; order kept."""
    if isinstance(labels, str):
        raise AnnotationError("give the labels as a list of names, not one string")
    out: list[str] = []
    seen: set[str] = set()
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise AnnotationError("a label name is empty")
        label = label.strip()
        if not _clean_name(label) or len(label) > MAX_NAME_CHARS:
            raise AnnotationError(f"the label {label[:40]!r} has control characters or is too long")
        if label.casefold() in seen:
            raise AnnotationError(f"the label {label!r} is given twice")
        seen.add(label.casefold())
        out.append(label)
    if not out:
        raise AnnotationError("the label set is empty; give at least one label")
    return tuple(out)


def stored_labels(session: Session) -> tuple[str, ...] | None:
    """The label set last used in this session (``sessions_meta``), or None."""
    raw = session.meta().get(LABELS_META_KEY)
    if not raw:
        return None
    try:
        return check_labels(json.loads(raw))
    except (ValueError, TypeError):
        return None  # a hand-edited, broken value: fall back to the defaults


def check_rating(rating: Any) -> int | None:
    """1..5 (an int, or a digit string such as a key press), or None to remove the rating."""
    if rating is None:
        return None
    if isinstance(rating, bool):
        raise AnnotationError(f"a rating is a whole number from 1 to 5, not {rating!r}")
    if isinstance(rating, str) and rating.strip().isdigit():
        rating = int(rating.strip())
    if isinstance(rating, float) and rating.is_integer():
        rating = int(rating)
    if not isinstance(rating, int) or rating not in RATINGS:
        raise AnnotationError(f"a rating is a whole number from 1 to 5, not {rating!r}")
    return rating


@dataclass
class _Change:
    description: str
    inserted: list[str]  # rows this change added (undo marks them deleted)
    deleted: list[str]  # rows this change marked deleted (undo restores them)


class Annotations:
    """Annotate one session as one annotator.

    ``labels``: the label set to offer and accept (default: the set last used in this session,
    else ``DEFAULT_LABELS``); it is stored in ``sessions_meta`` with the first change.
    ``manual``: stored with every row (1 for a person; 0 for e.g. a model acting as judge).

    Changing methods return a short description of the change (for a status line), or None when
    nothing changed (the value was already so; no row is written and nothing is added to undo).
    Invalid input raises ``AnnotationError`` (a ValueError) with a message for the user.
    Thread-safe (each change holds the session's lock for one transaction).
    """

    def __init__(self, session: Session, annotator: str | None = None,
                 labels: Iterable[str] | None = None, manual: bool = True):
        self.session = session
        self.annotator = check_annotator(annotator if annotator is not None else default_annotator())
        stored = stored_labels(session)
        self.labels: tuple[str, ...] = check_labels(labels) if labels is not None else (stored or DEFAULT_LABELS)
        self._labels_saved = stored == self.labels
        self.manual = 1 if manual else 0
        self._undo: list[_Change] = []

    # ----- changes

    def set_rating(self, generation_id: str, rating: int | str | None) -> str | None:
        """Rate an answer 1..5; None removes this annotator's rating."""
        value = check_rating(rating)
        new = None if value is None else str(value)
        with self.session.transaction():
            gen = self._generation(generation_id)
            old = self._live(generation_id, "rating")
            old_value = old[0]["value"] if old else None
            if old_value == new:
                return None
            target = _target(gen)
            if new is None:
                text = f"{target}: rating {old_value} removed"
            elif old_value is None:
                text = f"{target}: rating {new}"
            else:
                text = f"{target}: rating {old_value} → {new}"
            return self._apply(text, gen["prompt_id"], generation_id, "rating", new, [r["id"] for r in old])

    def toggle_label(self, generation_id: str, label: str) -> str | None:
        """Add the label to the answer, or remove it when this annotator already gave it."""
        if not isinstance(label, str) or not label.strip():
            raise AnnotationError("the label name is empty")
        with self.session.transaction():
            gen = self._generation(generation_id)
            live = self._live(generation_id, "label")
            wanted = label.strip()
            existing = next((r for r in live if r["value"] == wanted), None) or next(
                (r for r in live if r["value"].casefold() == wanted.casefold()), None)
            target = _target(gen)
            if existing is not None:  # removing works even for a label no longer in the set
                return self._apply(f"{target}: label {existing['value']!r} removed", gen["prompt_id"],
                                   generation_id, "label", None, [existing["id"]])
            canonical = self._label(wanted)
            return self._apply(f"{target}: label {canonical!r} added", gen["prompt_id"], generation_id,
                               "label", canonical, [])

    def set_note(self, generation_id: str, text: str | None) -> str | None:
        """Set this annotator's note on an answer (outer white space dropped); None or blank removes it."""
        if text is not None and not isinstance(text, str):
            raise AnnotationError("a note is text")
        new = text.strip() if text is not None else ""
        if len(new) > MAX_NOTE_CHARS:
            raise AnnotationError(f"the note is too long ({len(new)} characters, max {MAX_NOTE_CHARS})")
        new_value = new or None
        with self.session.transaction():
            gen = self._generation(generation_id)
            old = self._live(generation_id, "note")
            old_value = old[0]["value"] if old else None
            if old_value == new_value:
                return None
            target = _target(gen)
            verb = "removed" if new_value is None else "added" if old_value is None else "edited"
            return self._apply(f"{target}: note {verb}", gen["prompt_id"], generation_id, "note", new_value,
                               [r["id"] for r in old])

    def set_preference(self, prompt_id: str, choice: str | None) -> str | None:
        """The best pane of a prompt: one of its conditions, 'tie' or 'all-bad'; None removes."""
        if choice is not None and (not isinstance(choice, str) or not choice.strip()):
            raise AnnotationError("the preference is empty; give a condition, 'tie' or 'all-bad'")
        with self.session.transaction():
            prompt = self._prompt(prompt_id)
            new = None
            if choice is not None:
                choice = choice.strip()
                special = choice.casefold().replace("_", "-").replace(" ", "-")
                if special in PREFERENCE_SPECIAL:
                    choice = special
                allowed = conditions_of(self.session, prompt_id)
                if choice in PREFERENCE_SPECIAL or choice in allowed:
                    new = choice
                else:
                    listed = ", ".join([*allowed, *PREFERENCE_SPECIAL])
                    raise AnnotationError(f"unknown condition {choice!r} for this prompt; choose one of: {listed}")
            old = self._live_prompt(prompt_id)
            old_value = old[0]["value"] if old else None
            if old_value == new:
                return None
            target = f"prompt {prompt['external_id'] or _short(prompt['text'])}"
            if new is None:
                text = f"{target}: preference {old_value} removed"
            elif old_value is None:
                text = f"{target}: preference {new}"
            else:
                text = f"{target}: preference {old_value} → {new}"
            return self._apply(text, prompt_id, None, "preference", new, [r["id"] for r in old])

    def undo(self) -> str | None:
        """Undo this object's newest change still on the stack; returns its description, or None
        when there is nothing to undo. Raises ``AnnotationConflict`` (and drops that change) when
        the values were changed since by someone else, e.g. another process as the same annotator."""
        if not self._undo:
            return None
        change = self._undo.pop()
        now = now_iso()
        conn = self.session.conn
        try:
            with self.session.transaction():
                for row_id in change.inserted:
                    cur = conn.execute("UPDATE annotations SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
                                       [now, row_id])
                    if cur.rowcount != 1:
                        raise AnnotationConflict(f"cannot undo “{change.description}”: it was changed since")
                for row_id in change.deleted:
                    cur = conn.execute("UPDATE annotations SET deleted_at = NULL WHERE id = ? "
                                       "AND deleted_at IS NOT NULL", [row_id])
                    if cur.rowcount != 1:
                        raise AnnotationConflict(f"cannot undo “{change.description}”: it was changed since")
        except AnnotationConflict:
            raise  # the change is dropped: it can never apply
        except sqlite3.IntegrityError:  # a live value was added elsewhere in the meantime
            raise AnnotationConflict(f"cannot undo “{change.description}”: it was changed since") from None
        except BaseException:
            self._undo.append(change)  # e.g. the file was busy: the change can be undone later
            raise
        return change.description

    @property
    def undo_depth(self) -> int:
        """How many changes ``undo`` can still walk back."""
        return len(self._undo)

    # ----- reads (this annotator unless another is named)

    def current(self, generation_id: str, annotator: str | None = None) -> dict:
        """``{"rating": int | None, "labels": [names], "note": str | None}`` of one answer."""
        who = annotator or self.annotator
        rows = self.session._select(
            "SELECT kind, value FROM annotations WHERE generation_id = ? AND annotator = ? "
            "AND deleted_at IS NULL", [generation_id, who])
        return self._state(rows)

    def for_prompt(self, prompt_id: str, annotator: str | None = None) -> dict[str, dict]:
        """``{generation_id: current(...)}`` for the answers of a prompt this annotator annotated
        (one query, for badges on several panes)."""
        who = annotator or self.annotator
        rows = self.session._select(
            "SELECT generation_id, kind, value FROM annotations WHERE prompt_id = ? AND annotator = ? "
            "AND generation_id IS NOT NULL AND deleted_at IS NULL ORDER BY generation_id", [prompt_id, who])
        out: dict[str, dict] = {}
        for gid, group in itertools.groupby(rows, key=lambda r: r["generation_id"]):
            out[gid] = self._state(list(group))
        return out

    def preference(self, prompt_id: str, annotator: str | None = None) -> str | None:
        rows = self.session._select(
            "SELECT value FROM annotations WHERE prompt_id = ? AND generation_id IS NULL AND annotator = ? "
            "AND kind = 'preference' AND deleted_at IS NULL", [prompt_id, annotator or self.annotator])
        return rows[0]["value"] if rows else None

    def counts(self, prompt_id: str) -> dict[str, int]:
        """Live annotations of a prompt by everyone; see ``prompt_counts``."""
        return prompt_counts(self.session, prompt_id).get(prompt_id, dict(_EMPTY_COUNTS))

    # ----- internals

    def _state(self, rows: list[dict]) -> dict:
        rating = next((int(r["value"]) for r in rows if r["kind"] == "rating"), None)
        note = next((r["value"] for r in rows if r["kind"] == "note"), None)
        order = {label: i for i, label in enumerate(self.labels)}
        labels = sorted((r["value"] for r in rows if r["kind"] == "label"),
                        key=lambda v: (order.get(v, len(order)), v))
        return {"rating": rating, "labels": labels, "note": note}

    def _label(self, wanted: str) -> str:
        for label in self.labels:
            if label == wanted:
                return label
        for label in self.labels:
            if label.casefold() == wanted.casefold():
                return label
        raise AnnotationError(f"unknown label {wanted!r}; the labels are: {', '.join(self.labels)}")

    def _generation(self, generation_id: str) -> dict:
        rows = self.session._select(
            "SELECT id, prompt_id, condition, sample_index FROM generations WHERE id = ?", [generation_id])
        if not rows:
            raise AnnotationError(f"there is no answer with id {generation_id!r} in this session")
        if rows[0]["condition"] == "summary":
            raise AnnotationError("a hint summary is not an answer; annotate the answers")
        return rows[0]

    def _prompt(self, prompt_id: str) -> dict:
        rows = self.session._select("SELECT id, external_id, text FROM prompts WHERE id = ?", [prompt_id])
        if not rows:
            raise AnnotationError(f"there is no prompt with id {prompt_id!r} in this session")
        return rows[0]

    def _live(self, generation_id: str, kind: str) -> list[dict]:
        return self.session._select(
            "SELECT id, value FROM annotations WHERE generation_id = ? AND annotator = ? AND kind = ? "
            "AND deleted_at IS NULL ORDER BY created_at, rowid", [generation_id, self.annotator, kind])

    def _live_prompt(self, prompt_id: str) -> list[dict]:
        return self.session._select(
            "SELECT id, value FROM annotations WHERE prompt_id = ? AND generation_id IS NULL AND annotator = ? "
            "AND kind = 'preference' AND deleted_at IS NULL", [prompt_id, self.annotator])

    def _apply(self, description: str, prompt_id: str, generation_id: str | None, kind: str,
               value: str | None, replaced: list[str]) -> str:
        """Inside the caller's transaction: mark ``replaced`` deleted, insert ``value`` if any,
        remember the change for undo."""
        now = now_iso()
        conn = self.session.conn
        for row_id in replaced:
            conn.execute("UPDATE annotations SET deleted_at = ? WHERE id = ?", [now, row_id])
        inserted = []
        if value is not None:
            row_id = new_id()
            conn.execute(
                "INSERT INTO annotations (id, prompt_id, generation_id, annotator, kind, value, manual, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [row_id, prompt_id, generation_id, self.annotator, kind, value, self.manual, now])
            inserted.append(row_id)
        if not self._labels_saved:
            conn.execute("INSERT OR REPLACE INTO sessions_meta (key, value) VALUES (?, ?)",
                         [LABELS_META_KEY, json.dumps(list(self.labels), ensure_ascii=False)])
            self._labels_saved = True
        self._undo.append(_Change(description, inserted, list(replaced)))
        return description


def _target(gen: dict) -> str:
    return f"{gen['condition']} sample {gen['sample_index']}"


def _short(text: str, n: int = 30) -> str:
    one = " ".join((text or "").split())
    return repr(one if len(one) <= n else one[: n - 1] + "…")


# --------------------------------------------------------------------------- reading everyone's

_EMPTY_COUNTS = {"annotations": 0, "ratings": 0, "labels": 0, "notes": 0, "preferences": 0, "annotators": 0}


def conditions_of(session: Session, prompt_id: str) -> list[str]:
    """The conditions a prompt has answers in (any batch; hint summaries left out), sorted."""
    rows = session._select("SELECT DISTINCT condition FROM generations WHERE prompt_id = ? "
                           "AND condition != 'summary' ORDER BY condition", [prompt_id])
    return [r["condition"] for r in rows]


def prompt_counts(session: Session, prompt_id: str | None = None) -> dict[str, dict[str, int]]:
    """``{prompt_id: {"annotations", "ratings", "labels", "notes", "preferences", "annotators"}}``
    of live annotations by every annotator, for prompts that have any (or only ``prompt_id``)."""
    where = "deleted_at IS NULL" + (" AND prompt_id = ?" if prompt_id is not None else "")
    rows = session._select(
        """SELECT prompt_id, count(*) AS annotations,
                  count(CASE WHEN kind = 'rating' THEN 1 END) AS ratings,
                  count(CASE WHEN kind = 'label' THEN 1 END) AS labels,
                  count(CASE WHEN kind = 'note' THEN 1 END) AS notes,
                  count(CASE WHEN kind = 'preference' THEN 1 END) AS preferences,
                  count(DISTINCT annotator) AS annotators
             FROM annotations WHERE """ + where + " GROUP BY prompt_id ORDER BY prompt_id",
        [prompt_id] if prompt_id is not None else [])
    return {r.pop("prompt_id"): r for r in rows}


def history(session: Session, generation_id: str | None = None, prompt_id: str | None = None) -> list[dict]:
    """Every annotation row, deleted ones too, oldest first (optionally of one answer / prompt)."""
    where, params = where_equal(generation_id=generation_id, prompt_id=prompt_id)
    return session._select("SELECT * FROM annotations" + where + " ORDER BY created_at, rowid", params)


def annotators(session: Session) -> list[str]:
    """Everyone with a live annotation in this session, sorted."""
    return [r["annotator"] for r in session._select(
        "SELECT DISTINCT annotator FROM annotations WHERE deleted_at IS NULL ORDER BY annotator")]


@dataclass
class Collected:
    """Everyone's live annotations, arranged for statistics and export."""

    # generation_id -> annotator -> value
    ratings: dict[str, dict[str, int]] = field(default_factory=dict)
    labels: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    notes: dict[str, dict[str, str]] = field(default_factory=dict)
    # generation_id -> condition (of annotated answers)
    condition: dict[str, str] = field(default_factory=dict)
    # prompt_id -> annotator -> preference
    preferences: dict[str, dict[str, str]] = field(default_factory=dict)
    annotators: list[str] = field(default_factory=list)

    def annotated(self, generation_id: str) -> set[str]:
        """Annotators with any rating, label or note on this answer."""
        return (set(self.ratings.get(generation_id, ())) | set(self.labels.get(generation_id, ()))
                | set(self.notes.get(generation_id, ())))


def collect(session: Session) -> Collected:
    rows = session._select(
        """SELECT a.prompt_id, a.generation_id, a.annotator, a.kind, a.value, g.condition
             FROM annotations a LEFT JOIN generations g ON g.id = a.generation_id
            WHERE a.deleted_at IS NULL
            ORDER BY a.prompt_id, a.generation_id, a.annotator, a.kind, a.value""")
    c = Collected()
    names = set()
    for r in rows:
        gid, who, kind, value = r["generation_id"], r["annotator"], r["kind"], r["value"]
        names.add(who)
        if kind == "preference":
            c.preferences.setdefault(r["prompt_id"], {})[who] = value
            continue
        if gid is None:
            continue
        c.condition[gid] = r["condition"]
        if kind == "rating":
            c.ratings.setdefault(gid, {})[who] = int(value)
        elif kind == "label":
            c.labels.setdefault(gid, {}).setdefault(who, []).append(value)
        elif kind == "note":
            c.notes.setdefault(gid, {})[who] = value
    c.annotators = sorted(names)
    return c


def condition_summary(session: Session, collected: Collected | None = None) -> dict[str, dict]:
    """Per condition, over every live annotation of its answers (every batch: a regenerated pane
    keeps the judgements of the old answers):

    ``ratings`` (rating rows, every annotator's counts once), ``mean_rating`` (their mean),
    ``rating_counts`` ([n of 1, …, n of 5]), ``rated_samples`` (answers with a rating),
    ``label_counts`` ({label: rows}, sorted by label), ``notes`` and ``preference_wins``
    (prompt preferences, one per annotator, naming the condition)."""
    c = collected or collect(session)
    out: dict[str, dict] = {}

    def slot(cond: str) -> dict:
        return out.setdefault(cond, {"ratings": 0, "mean_rating": None, "rating_counts": [0] * 5,
                                     "rated_samples": 0, "label_counts": {}, "notes": 0, "preference_wins": 0})

    values: dict[str, list[int]] = {}
    for gid, by in c.ratings.items():
        s = slot(c.condition[gid])
        s["rated_samples"] += 1
        for r in by.values():
            values.setdefault(c.condition[gid], []).append(r)
            s["rating_counts"][r - 1] += 1
    for cond, vals in values.items():
        out[cond]["ratings"] = len(vals)
        out[cond]["mean_rating"] = float(mean(vals))
    for gid, by in c.labels.items():
        counts = slot(c.condition[gid])["label_counts"]
        for labels in by.values():
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
    for gid, by in c.notes.items():
        slot(c.condition[gid])["notes"] += len(by)
    for by in c.preferences.values():
        for choice in by.values():
            if choice not in PREFERENCE_SPECIAL:
                slot(choice)["preference_wins"] += 1
    for s in out.values():
        s["label_counts"] = dict(sorted(s["label_counts"].items()))
    return out


def preference_totals(session: Session, collected: Collected | None = None) -> dict[str, int]:
    """``{"prompts": prompts with a preference, "preferences": all (one per annotator),
    "tie": n, "all-bad": n}``."""
    c = collected or collect(session)
    choices = [v for by in c.preferences.values() for v in by.values()]
    return {"prompts": len(c.preferences), "preferences": len(choices),
            TIE: choices.count(TIE), ALL_BAD: choices.count(ALL_BAD)}


def _kappa(a: list[bool], b: list[bool]) -> float | None:
    """Cohen's kappa of two raters' yes/no judgements of the same items; None if undefined."""
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    p_e = pa * pb + (1 - pa) * (1 - pb)
    if p_e >= 1 - 1e-12:
        return None
    return (p_o - p_e) / (1 - p_e)


def agreement(session: Session, collected: Collected | None = None) -> dict:
    """Agreement between annotators, where several annotated the same thing.

    * ``ratings``: over answers rated by >= 2 annotators, every pair of their ratings:
      ``generations``, ``pairs``, ``exact`` (share of equal pairs), ``within_one`` (share
      differing by at most 1) and ``mean_abs_diff``.
    * ``labels``: over answers that >= 2 annotators annotated (any rating, label or note), every
      pair: ``items``, ``exact`` (share of pairs with the same label set), and per label seen
      (``per_label``): ``observed`` agreement on its presence and ``kappa``, Cohen's kappa of the
      two annotators' yes/no per answer, averaged over annotator pairs (Light's kappa); None
      where undefined (both gave or withheld the label on every shared answer).
    * ``preferences``: over prompts with >= 2 preferences: ``prompts``, ``pairs``, ``exact``.

    Shares and means are None when there is nothing to compare.
    """
    c = collected or collect(session)
    # ratings
    diffs = []
    rated = 0
    for by in c.ratings.values():
        if len(by) < 2:
            continue
        rated += 1
        diffs.extend(abs(by[x] - by[y]) for x, y in itertools.combinations(sorted(by), 2))
    ratings = {
        "generations": rated, "pairs": len(diffs),
        "exact": _share(d == 0 for d in diffs), "within_one": _share(d <= 1 for d in diffs),
        "mean_abs_diff": float(mean(diffs)) if diffs else None,
    }
    # labels
    seen_labels = sorted({label for by in c.labels.values() for labels in by.values() for label in labels})
    per_pair: dict[tuple[str, str], list[tuple[set, set]]] = {}
    shared_items = 0
    for gid in sorted(set(c.ratings) | set(c.labels) | set(c.notes)):
        who = sorted(c.annotated(gid))
        if len(who) < 2:
            continue
        sets = {w: set(c.labels.get(gid, {}).get(w, [])) for w in who}
        for x, y in itertools.combinations(who, 2):
            per_pair.setdefault((x, y), []).append((sets[x], sets[y]))
            shared_items += 1
    pairs_all = [p for items in per_pair.values() for p in items]
    per_label = {}
    for label in seen_labels:
        observed = _share((label in a) == (label in b) for a, b in pairs_all)
        kappas = [k for k in (_kappa([label in a for a, _ in items], [label in b for _, b in items])
                              for items in per_pair.values()) if k is not None]
        per_label[label] = {"observed": observed, "kappa": float(mean(kappas)) if kappas else None}
    labels = {"items": shared_items, "exact": _share(a == b for a, b in pairs_all), "per_label": per_label}
    # preferences
    pref_pairs = []
    pref_prompts = 0
    for by in c.preferences.values():
        if len(by) < 2:
            continue
        pref_prompts += 1
        pref_pairs.extend(by[x] == by[y] for x, y in itertools.combinations(sorted(by), 2))
    preferences = {"prompts": pref_prompts, "pairs": len(pref_pairs), "exact": _share(pref_pairs)}
    return {"annotators": list(c.annotators), "ratings": ratings, "labels": labels, "preferences": preferences}


def _share(flags: Iterable[bool]) -> float | None:
    flags = list(flags)
    return sum(1 for f in flags if f) / len(flags) if flags else None

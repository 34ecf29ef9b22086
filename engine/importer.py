"""Import generations made elsewhere (a cluster, another tool, a paper's released files).

JSONL, one JSON object a line, in three forms that may be mixed in one file:

* all samples of a prompt: ``{"id", "prompt", "samples": ["...", ...]}`` (the form of
  ``../shared/reference/lima-oe/*.jsonl``); ``samples[i]`` becomes sample ``i``;
* one sample a line: ``{"id", "prompt", "condition", "text"}``; the sample index is the order
  of appearance of that id and condition in the file;
* a hint: ``{"id", "prompt", "hint"}``, stored in ``hints`` with source ``imported``.

Optional keys: ``"condition"`` (any sample line) and ``"model"`` (stored as model name and id;
otherwise the condition's name). The condition is ``--condition`` if given, else the line's
``"condition"``, else the file's stem (``llama-2-base.jsonl`` → ``llama-2-base``; the
``.hints`` of ``x.hints.jsonl`` is dropped too). Prompts are matched by id (``prompts.
external_id``) and created when new; an id already in the session with another prompt text is
an error for that line.

Texts are stored exactly as given (``text`` and ``raw_text``, stop fences included: the
reference figures are computed on the raw text). Every bad line is reported with its line
number, and an import is all-or-nothing (one transaction over all its files) unless
``skip_bad`` is set, in which case bad lines are left out and the rest is imported.

Re-importing never duplicates: a prompt's samples are compared with the newest batch already
stored for that condition (``Session.latest_batches``); samples found there with the same index
and text are skipped, the others are appended to that batch. If the file's sample 0 or any
sample at an index already stored differs, the file's samples are imported as a new batch,
which then is the one the metrics use.

Pure Python (no torch, no textual): ``overton import`` must start fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from engine.session import Session, now_iso

RESERVED_CONDITIONS = frozenset({"summary"})  # hint summaries; not a condition
BOM = b"\xef\xbb\xbf"
WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
             (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))
FORMS = ("samples", "text", "hint")


class ImportFailed(Exception):
    """Nothing was imported; ``bad_lines`` says where and why (the message is for the user)."""

    def __init__(self, message: str, bad_lines: Sequence[BadLine] = ()):
        super().__init__(message)
        self.bad_lines = list(bad_lines)


@dataclass(frozen=True)
class BadLine:
    file: str
    line: int | None  # 1-based; None for a problem with the whole file
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclass
class Record:
    """One valid line."""

    form: str  # 'samples' | 'text' | 'hint'
    line: int
    external_id: str
    prompt: str
    condition: str | None  # None for hints
    texts: list[str]  # the samples ('samples'), the one sample ('text'), or [hint]
    model: str | None = None
    sample_index: int = 0  # for 'text' lines: order of appearance of (id, condition)


@dataclass
class ParsedFile:
    path: Path
    name: str  # the file name, as stored in each generation's meta
    default_condition: str
    records: list[Record] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    lines: int = 0


@dataclass
class FileSummary:
    file: str
    records: int = 0
    prompts_added: int = 0
    prompts_matched: int = 0
    generations_added: int = 0
    generations_skipped: int = 0
    hints_added: int = 0
    hints_skipped: int = 0
    conditions: dict[str, int] = field(default_factory=dict)  # condition -> generations added
    bad_lines: list[BadLine] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "bad_lines"}
        d["bad_lines"] = [b.to_dict() for b in self.bad_lines]
        return d


@dataclass
class ImportSummary:
    files: list[FileSummary]
    prompts_added: int = 0  # distinct prompts created by this import
    prompts_matched: int = 0  # distinct prompts that were already in the session

    @property
    def generations_added(self) -> int:
        return sum(f.generations_added for f in self.files)

    @property
    def generations_skipped(self) -> int:
        return sum(f.generations_skipped for f in self.files)

    @property
    def hints_added(self) -> int:
        return sum(f.hints_added for f in self.files)

    @property
    def hints_skipped(self) -> int:
        return sum(f.hints_skipped for f in self.files)

    @property
    def bad_lines(self) -> list[BadLine]:
        return [b for f in self.files for b in f.bad_lines]

    def to_dict(self) -> dict:
        return {
            "prompts_added": self.prompts_added,
            "prompts_matched": self.prompts_matched,
            "generations_added": self.generations_added,
            "generations_skipped": self.generations_skipped,
            "hints_added": self.hints_added,
            "hints_skipped": self.hints_skipped,
            "bad_lines": [b.to_dict() for b in self.bad_lines],
            "files": [f.to_dict() for f in self.files],
        }


# --------------------------------------------------------------------------- parsing


def default_condition(path: Path) -> str:
    """``llama-2-base.jsonl`` → ``llama-2-base``; ``x.hints.jsonl`` → ``x``."""
    stem = Path(path).stem
    return stem[: -len(".hints")] if stem.endswith(".hints") and len(stem) > len(".hints") else stem


def check_condition(name: str, what: str = "condition") -> str | None:
    """None if ``name`` is usable as a condition, else why not."""
    if not name.strip():
        return f"the {what} is empty"
    if name != name.strip():
        return f"the {what} {name!r} has leading or trailing spaces"
    if name in RESERVED_CONDITIONS:
        return f"the {what} {name!r} is reserved for hint summaries; choose another name"
    if any(ord(c) < 32 for c in name):
        return f"the {what} {name!r} contains control characters"
    return None


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _line_record(obj: Any, line: int, default_cond: str, override: str | None) -> Record | str:
    """A Record, or the reason the line is bad."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {_type_name(obj)}"
    forms = [k for k in FORMS if k in obj]
    if not forms:
        return ("missing key: a line needs 'samples' (all samples of a prompt), 'text' (one sample) "
                "or 'hint'")
    if len(forms) > 1:
        return f"a line has one of 'samples', 'text' or 'hint', this one has {' and '.join(map(repr, forms))}"
    form = forms[0]
    for key in ("id", "prompt"):
        if key not in obj:
            return f"missing key {key!r}"
    ext = obj["id"]
    if isinstance(ext, bool) or not isinstance(ext, (str, int)):
        return f"'id' must be a string or an integer, not {_type_name(ext)}"
    ext = str(ext)
    if not ext.strip():
        return "'id' is empty"
    prompt = obj["prompt"]
    if not isinstance(prompt, str):
        return f"'prompt' must be a string, not {_type_name(prompt)}"
    if not prompt.strip():
        return "'prompt' is empty"
    model = obj.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        return f"'model' must be a non-empty string, not {_type_name(model) if not isinstance(model, str) else 'empty'}"

    if form == "hint":
        hint = obj["hint"]
        if not isinstance(hint, str):
            return f"'hint' must be a string, not {_type_name(hint)}"
        if not hint.strip():
            return "'hint' is empty"
        return Record("hint", line, ext, prompt, None, [hint])

    condition = override
    if condition is None and "condition" in obj:
        condition = obj["condition"]
        if not isinstance(condition, str):
            return f"'condition' must be a string, not {_type_name(condition)}"
        problem = check_condition(condition)
        if problem:
            return problem
    if condition is None:
        condition = default_cond
        problem = check_condition(condition, "condition taken from the file name")
        if problem:
            return problem + " (give --condition)"

    if form == "samples":
        samples = obj["samples"]
        if not isinstance(samples, list):
            return f"'samples' must be a list of strings, not {_type_name(samples)}"
        if not samples:
            return "'samples' is an empty list"
        for i, s in enumerate(samples):
            if not isinstance(s, str):
                return f"'samples' must be a list of strings; item {i} is {_type_name(s)}"
        return Record("samples", line, ext, prompt, condition, list(samples), model)

    text = obj["text"]
    if not isinstance(text, str):
        return f"'text' must be a string, not {_type_name(text)}"
    return Record("text", line, ext, prompt, condition, [text], model)


class _Seen:
    """What earlier lines (of all files in one import) said, to catch contradictions."""

    def __init__(self) -> None:
        self.prompt: dict[str, tuple[str, str, int]] = {}  # id -> (prompt, file, line)


def parse_file(path: str | Path, condition: str | None = None, seen: _Seen | None = None) -> ParsedFile:
    """Read and validate one file without touching any session.

    Raises ImportFailed if the file cannot be read at all; bad lines are collected in ``.bad``.
    """
    path = Path(path)
    seen = seen or _Seen()
    display = str(path)
    try:
        if path.is_dir():
            raise ImportFailed(f"{display} is a directory, not a JSONL file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImportFailed(f"no such file: {display}") from None
    except OSError as e:
        raise ImportFailed(f"cannot read {display}: {e.strerror or e}") from None

    parsed = ParsedFile(path, path.name, default_condition(path))
    for bom, encoding in WIDE_BOMS:
        if data.startswith(bom):  # every line would be "not valid UTF-8": say it once
            parsed.bad.append(BadLine(display, None, f"the file is {encoding} encoded; save it as UTF-8"))
            return parsed
    if data.startswith(BOM):
        data = data[len(BOM):]
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    parsed.lines = len(raw_lines)

    samples_line: dict[tuple[str, str], int] = {}  # (id, condition) -> line of its 'samples' line
    text_line: dict[tuple[str, str], int] = {}  # (id, condition) -> first 'text' line
    text_count: dict[tuple[str, str], int] = {}
    content = 0
    for n, raw in enumerate(raw_lines, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            parsed.bad.append(BadLine(display, n, f"not valid UTF-8 (byte {e.start + 1} of the line)"))
            content += 1
            continue
        if not line.strip():
            continue
        content += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            parsed.bad.append(BadLine(display, n, f"malformed JSON: {e.msg} (column {e.colno})"))
            continue
        rec = _line_record(obj, n, parsed.default_condition, condition)
        if isinstance(rec, str):
            parsed.bad.append(BadLine(display, n, rec))
            continue

        earlier = seen.prompt.get(rec.external_id)
        if earlier is not None and earlier[0].strip() != rec.prompt.strip():
            where = f"line {earlier[2]}" + ("" if earlier[1] == display else f" of {earlier[1]}")
            parsed.bad.append(BadLine(display, n, f"id {rec.external_id!r} has a different prompt than on {where}"))
            continue
        if rec.form != "hint":
            key = (rec.external_id, rec.condition)
            if rec.form == "samples":
                if key in samples_line:
                    parsed.bad.append(BadLine(display, n, f"duplicate id {rec.external_id!r}: already on line "
                                                          f"{samples_line[key]} (condition {rec.condition!r})"))
                    continue
                if key in text_line:
                    parsed.bad.append(BadLine(display, n, f"id {rec.external_id!r} already has one-sample lines "
                                                          f"(line {text_line[key]}) for condition {rec.condition!r}"))
                    continue
                samples_line[key] = n
            else:
                if key in samples_line:
                    parsed.bad.append(BadLine(display, n, f"id {rec.external_id!r} already has all its samples on "
                                                          f"line {samples_line[key]} for condition {rec.condition!r}"))
                    continue
                text_line.setdefault(key, n)
                rec.sample_index = text_count.get(key, 0)
                text_count[key] = rec.sample_index + 1
        if earlier is None:
            seen.prompt[rec.external_id] = (rec.prompt, display, n)
        parsed.records.append(rec)

    if content == 0:
        parsed.bad.append(BadLine(display, None, "the file is empty (no JSON lines)"))
    return parsed


def parse_files(paths: Iterable[str | Path], condition: str | None = None) -> list[ParsedFile]:
    """Parse every file (no session needed). Raises ImportFailed for an unusable ``condition``
    or a file that cannot be read; bad lines are in each ParsedFile's ``.bad``."""
    if condition is not None:
        problem = check_condition(condition, "--condition")
        if problem:
            raise ImportFailed(problem)
    paths = list(paths)
    if not paths:
        raise ImportFailed("no files to import")
    seen = _Seen()
    return [parse_file(p, condition, seen) for p in paths]


# --------------------------------------------------------------------------- importing


def _failure(bad: list[BadLine]) -> ImportFailed:
    n = len(bad)
    return ImportFailed(
        f"{n} bad line{'s' if n != 1 else ''}; nothing was imported "
        "(fix them, or pass --skip-bad to import the rest)", bad)


def import_parsed(session: Session, parsed: Sequence[ParsedFile], skip_bad: bool = False) -> ImportSummary:
    """Write parsed files into ``session`` in one transaction; see the module docstring."""
    bad = [b for p in parsed for b in p.bad]
    if bad and not skip_bad:
        raise _failure(bad)

    summaries = [FileSummary(p.name if sum(q.name == p.name for q in parsed) == 1 else str(p.path),
                             bad_lines=list(p.bad)) for p in parsed]
    stamp = now_iso()
    with session.transaction():
        prompts = {r["external_id"]: r for r in session.prompts() if r["external_id"] is not None}
        batches = {key: {i: row["text"] for i, row in rows.items()}
                   for key, rows in session.latest_batches().items()}
        hint_texts: set[tuple[str, str]] = set()
        for row in prompts.values():
            hint_texts.update((row["id"], h["text"]) for h in session.hints(row["id"]))
        existing_ids = {r["id"] for r in prompts.values()}
        added: set[str] = set()
        matched: set[str] = set()
        db_bad: list[BadLine] = []
        generations: list[dict] = []

        for pf, summary in zip(parsed, summaries):
            display = str(pf.path)
            # 1. prompts: match by id, or create
            prompt_of: dict[str, str] = {}
            for rec in pf.records:
                row = prompts.get(rec.external_id)
                if row is None:
                    pid = session.add_prompt(rec.prompt, external_id=rec.external_id,
                                             meta={"imported_from": pf.name, "line": rec.line})
                    row = prompts[rec.external_id] = {"id": pid, "text": rec.prompt, "external_id": rec.external_id}
                    added.add(pid)
                    summary.prompts_added += 1
                elif row["text"].strip() != rec.prompt.strip():
                    db_bad.append(BadLine(display, rec.line, f"id {rec.external_id!r} is already in the session with "
                                                             f"a different prompt: {row['text'][:60]!r}"))
                    continue
                elif rec.external_id not in prompt_of:
                    # matched by id: in the session already, or created by an earlier file
                    if row["id"] in existing_ids:
                        matched.add(row["id"])
                    summary.prompts_matched += 1
                prompt_of[rec.external_id] = row["id"]

            # 2. group the samples of each (prompt, condition): one group is one batch
            groups: dict[tuple[str, str], list[tuple[int, str, Record]]] = {}
            for rec in pf.records:
                if rec.external_id not in prompt_of:
                    continue  # its prompt line was bad
                pid = prompt_of[rec.external_id]
                if rec.form == "hint":
                    if (pid, rec.texts[0]) in hint_texts:
                        summary.hints_skipped += 1
                        continue
                    session.add_hint(pid, rec.texts[0], source="imported")
                    hint_texts.add((pid, rec.texts[0]))
                    summary.hints_added += 1
                    continue
                group = groups.setdefault((pid, rec.condition), [])
                if rec.form == "samples":
                    group.extend((i, t, rec) for i, t in enumerate(rec.texts))
                else:
                    group.append((len(group), rec.texts[0], rec))
            summary.records = sum(1 for r in pf.records if r.external_id in prompt_of)

            # 3. compare with the newest stored batch; skip what is there already
            for (pid, cond), items in groups.items():
                stored = batches.get((pid, cond))
                same = stored is not None and stored.get(0) == items[0][1] and all(
                    stored[i] == t for i, t, _ in items if i in stored)
                if same:
                    new = [it for it in items if it[0] not in stored]
                    stored.update({i: t for i, t, _ in new})
                else:
                    new = items
                    batches[(pid, cond)] = {i: t for i, t, _ in items}
                summary.generations_skipped += len(items) - len(new)
                for i, text, rec in new:
                    model = rec.model or cond
                    generations.append(dict(
                        prompt_id=pid, condition=cond, sample_index=i, model_id=model, model_name=model,
                        backend="import", text=text, raw_text=text, finish_reason="imported",
                        source="imported", settings={}, meta={"file": pf.name, "line": rec.line},
                        created_at=stamp,
                    ))
                    summary.generations_added += 1
                    summary.conditions[cond] = summary.conditions.get(cond, 0) + 1

        if db_bad:
            if not skip_bad:
                raise _failure(db_bad)  # rolls the transaction back
            by_file = {str(p.path): s for p, s in zip(parsed, summaries)}
            for b in db_bad:
                by_file[b.file].bad_lines.append(b)
        session.add_generations_bulk(generations)

    return ImportSummary(summaries, prompts_added=len(added), prompts_matched=len(matched))


def import_files(session: Session, paths: Iterable[str | Path], condition: str | None = None,
                 skip_bad: bool = False) -> ImportSummary:
    """Parse and import ``paths`` into ``session``: all or nothing unless ``skip_bad``."""
    return import_parsed(session, parse_files(paths, condition), skip_bad=skip_bad)

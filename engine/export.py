"""Export a session: one record per answer with its metrics and annotations, the per-condition
summary of ``engine.stats`` and the agreement between annotators (``overton export``).

Which answers: those the statistics count (each prompt and condition's newest batch, cancelled
answers left out; ``Session.latest_batches``), plus every other answer that has a live
annotation, so no judgement is lost; ``include_all`` exports every answer (hint summaries are
never answers). ``in_stats`` says whether a record is counted in the summary.

Per-answer record (``GENERATION_COLUMNS``, in this order):

================== ==============================================================================
prompt_id          the prompt's id (ULID); ``external_id`` its data set id; ``prompt`` its text
condition          ``sample_index``, ``generation_id``, ``model`` (name, else id), ``finish_reason``,
                   ``source`` ('generated' | 'imported'), ``created_at``
in_stats           counted by the statistics (newest batch, not cancelled)
words              whitespace-split words of the stripped text
similarity         Jaccard of the word bags with the reference's sample 0 (newest batch), and
coverage           the share of the answer's word bag found in it; null for that sample itself
                   and where the prompt has no reference answer (``engine.metrics``, as stats)
abstain            quality-control flags (``engine.metrics.quality_flags``)
numbered_list
bullet_list
rating             mean of the annotators' ratings; ``ratings`` {annotator: 1..5}
labels             every label any annotator gave (sorted); ``labels_by_annotator`` {annotator:
                   [labels]}; ``notes`` {annotator: note}
preference         the distinct preferences for the prompt (a condition, 'tie', 'all-bad'),
                   sorted; ``preference_by_annotator`` {annotator: choice}; ``preferred_by``
                   how many annotators chose this answer's condition
annotators         who annotated this answer (rating, label or note), sorted
text               the answer as stored
================== ==============================================================================

Formats (``render``): ``json`` an object {"session", "reference", "base", "counts",
"generations", "summary", "preferences", "agreement"}; ``jsonl`` one answer record a line;
``csv`` the answer records, with lists joined by "; ", objects as JSON text, booleans 1/0, and
the summary (and agreement, as ``key,value`` rows) in ``PATH.summary.csv`` and
``PATH.agreement.csv`` beside ``PATH`` (on stdout: the answer records only); ``md`` a readable
report. Output is deterministic: records sorted (prompts by creation, conditions as in the
stats table, then sample index), floats rounded to 6 decimals (3 in the report), no time stamp.

CSV cells that are strings starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
get a leading ``'`` (OWASP's rule against spreadsheet formula injection); numbers stay numbers.
Files are written to a temporary file beside the target and renamed into place, so a failed
export leaves nothing behind. No torch, no textual.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import annotations as ann
from engine import metrics as m
from engine.sanitize import printable
from engine.session import Session
from engine.stats import ConditionStats, Stats, _order, compute_stats, session_word_bags

FORMATS = ("csv", "json", "jsonl", "md")
SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".md": "md",
                  ".markdown": "md"}
BINARY_SUFFIXES = (".xlsx", ".xls", ".xlsm", ".ods", ".odt", ".docx", ".doc", ".pdf", ".parquet", ".sqlite", ".db")
FLOAT_DIGITS = 6
MD_DIGITS = 3
MD_ANSWER_CHARS = 400  # answers are cut to this many characters in the Markdown report
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

GENERATION_COLUMNS = (
    "prompt_id", "external_id", "prompt", "condition", "sample_index", "generation_id", "model",
    "finish_reason", "source", "created_at", "in_stats", "words", "similarity", "coverage",
    "abstain", "numbered_list", "bullet_list", "rating", "ratings", "labels", "labels_by_annotator",
    "notes", "preference", "preference_by_annotator", "preferred_by", "annotators", "text",
)
SUMMARY_COLUMNS = (
    "condition", "is_reference", "is_base", "prompts", "samples", "mean_words", "diversity", "similarity",
    "coverage", "embedding_similarity", "embeddings_missing", "gap_closed", "abstain_rate",
    "numbered_list_rate", "bullet_list_rate", "info_in_reference", "info_in_one_other",
    "info_in_union_others", "ratings", "mean_rating", "rating_1", "rating_2", "rating_3", "rating_4",
    "rating_5", "rated_samples", "label_counts", "notes", "preference_wins",
)


class ExportError(ValueError):
    """A problem the user can fix (unknown format, output path ...); shown without a traceback."""


@dataclass
class Export:
    session: str  # the session file's name
    reference: str
    base: str | None
    reference_found: bool
    generations: list[dict] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    preferences: dict = field(default_factory=dict)
    agreement: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    prompts: list[dict] = field(default_factory=list)  # id, external_id, text, preference_by_annotator


def format_for(fmt: str | None, output: Path | None) -> str:
    """The format named, else the one the output's suffix implies, else Markdown."""
    if fmt:
        name = fmt.strip().lower()
        if name not in FORMATS:
            raise ExportError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
        return name
    if output is not None:
        suffix = Path(output).suffix.lower()
        if suffix in BINARY_SUFFIXES:  # text written there would only confuse the program that opens it
            raise ExportError(f"overton does not write {suffix} files; use .csv (any spreadsheet opens it), "
                              f".json, .jsonl or .md, or name the format with --format")
        return SUFFIX_FORMATS.get(suffix, "md")
    return "md"


# --------------------------------------------------------------------------- building


def build_export(session: Session, reference: str | None = None, base: str | None = None,
                 include_all: bool = False) -> Export:
    """Everything an export holds. An explicitly named reference or base that the session lacks
    raises ``engine.stats.StatsError``; without ``reference``, a session lacking 'aligned' exports
    with similarity and coverage left null."""
    stats: Stats = compute_stats(session, reference=reference, base=base, require_reference=reference is not None)
    ref = stats.reference
    batches = session.latest_batches()
    in_stats = {row["id"] for batch in batches.values() for row in batch.values()}
    ref_s0 = {pid: batch[0] for (pid, cond), batch in batches.items() if cond == ref and 0 in batch}
    collected = ann.collect(session)

    prompts = session.prompts()
    prompt_order = {p["id"]: i for i, p in enumerate(prompts)}
    by_prompt = {p["id"]: p for p in prompts}
    gens = [g for g in session.generations()
            if g["condition"] != "summary"
            and (include_all or g["id"] in in_stats or g["id"] in collected.condition)]
    cond_rank = {c: i for i, c in enumerate(_order({g["condition"] for g in gens}, ref, stats.base))}
    gens.sort(key=lambda g: (prompt_order[g["prompt_id"]], cond_rank[g["condition"]], g["sample_index"],
                             g["created_at"], g["id"]))

    # word bags from the session (stored by compute_stats above, or now), not re-tokenized
    bags = session_word_bags(session, [g["text"] or "" for g in gens]
                             + [r["text"] or "" for r in ref_s0.values()])
    records = [_generation_record(g, by_prompt[g["prompt_id"]], ref_s0.get(g["prompt_id"]), g["id"] in in_stats,
                                  collected, bags) for g in gens]
    summary = [_summary_record(r) for r in stats.rows]
    exported_prompts = []
    for pid in sorted({g["prompt_id"] for g in gens} | set(collected.preferences), key=prompt_order.__getitem__):
        p = by_prompt[pid]
        exported_prompts.append({"id": pid, "external_id": p["external_id"], "text": p["text"],
                                 "preference_by_annotator": dict(sorted(collected.preferences.get(pid, {}).items()))})
    live = sum(len(by) for by in collected.ratings.values()) + sum(
        len(v) for by in collected.labels.values() for v in by.values()) + sum(
        len(by) for by in collected.notes.values()) + sum(len(by) for by in collected.preferences.values())
    counts = {
        "prompts": len(prompts),
        "prompts_exported": len(exported_prompts),
        "generations": len(records),
        "generations_in_stats": sum(1 for r in records if r["in_stats"]),
        "annotations": live,
        "annotators": len(collected.annotators),
    }
    return Export(
        session=session.path.name, reference=ref, base=stats.base, reference_found=stats.row(ref) is not None,
        generations=records, summary=summary, preferences=dict(stats.preferences),
        agreement=stats.agreement, counts=counts, prompts=exported_prompts,
    )


def _generation_record(g: dict, prompt: dict, ref: dict | None, counted: bool, c: ann.Collected,
                       bags: dict | None = None) -> dict:
    text = g["text"] or ""
    bag = (lambda t: bags[t] if t in bags else m.as_bag(t)) if bags else m.as_bag
    is_ref = ref is not None and ref["id"] == g["id"]
    flags = m.quality_flags(text)
    gid = g["id"]
    ratings = dict(sorted(c.ratings.get(gid, {}).items()))
    labels_by = {a: sorted(v) for a, v in sorted(c.labels.get(gid, {}).items())}
    notes = dict(sorted(c.notes.get(gid, {}).items()))
    prefs = dict(sorted(c.preferences.get(g["prompt_id"], {}).items()))
    record = {
        "prompt_id": g["prompt_id"],
        "external_id": prompt["external_id"],
        "prompt": prompt["text"],
        "condition": g["condition"],
        "sample_index": g["sample_index"],
        "generation_id": gid,
        "model": g["model_name"] or g["model_id"],
        "finish_reason": g["finish_reason"],
        "source": g["source"],
        "created_at": g["created_at"],
        "in_stats": counted,
        "words": m.word_count(text),
        "similarity": None if ref is None or is_ref else m.jaccard(bag(text), bag(ref["text"] or "")),
        "coverage": None if ref is None or is_ref else m.coverage(bag(text), bag(ref["text"] or "")),
        "abstain": flags["abstain"],
        "numbered_list": flags["numbered_list"],
        "bullet_list": flags["bullet_list"],
        "rating": sum(ratings.values()) / len(ratings) if ratings else None,
        "ratings": ratings,
        "labels": sorted({label for v in labels_by.values() for label in v}),
        "labels_by_annotator": labels_by,
        "notes": notes,
        "preference": sorted(set(prefs.values())),
        "preference_by_annotator": prefs,
        "preferred_by": sum(1 for v in prefs.values() if v == g["condition"]),
        "annotators": sorted(c.annotated(gid)),
        "text": g["text"],
    }
    return record


_FLOAT_SUMMARY = ("mean_words", "diversity", "similarity", "coverage", "embedding_similarity", "gap_closed",
                  "abstain_rate", "numbered_list_rate", "bullet_list_rate", "info_in_reference",
                  "info_in_one_other", "info_in_union_others", "mean_rating")


def _summary_record(r: ConditionStats) -> dict:
    out = {k: getattr(r, k) for k in SUMMARY_COLUMNS if hasattr(r, k)}
    for k in _FLOAT_SUMMARY:  # a mean of whole numbers may come back as an int: always a float here
        if out[k] is not None:
            out[k] = float(out[k])
    for i, n in enumerate(r.rating_counts, start=1):
        out[f"rating_{i}"] = n
    return {k: out[k] for k in SUMMARY_COLUMNS}


# --------------------------------------------------------------------------- rendering


def _num(value: Any, digits: int = FLOAT_DIGITS) -> Any:
    """Floats rounded (stable text), non-finite to None; everything else unchanged, recursively."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        rounded = round(value, digits)
        return 0.0 if rounded == 0 else rounded  # no '-0.0'
    if isinstance(value, dict):
        return {k: _num(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_num(v, digits) for v in value]
    return value


def _dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(_num(value), ensure_ascii=False, indent=indent, allow_nan=False)


def to_json(e: Export) -> str:
    return _dumps({
        "session": e.session, "reference": e.reference, "base": e.base, "counts": e.counts,
        "generations": e.generations, "summary": e.summary, "preferences": e.preferences,
        "agreement": e.agreement,
    }, indent=2) + "\n"


def to_jsonl(e: Export) -> str:
    return "".join(_dumps(r) + "\n" for r in e.generations)


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: None → '', bool → 1/0, list → '; '-joined, dict → JSON text,
    float rounded; strings that a spreadsheet would run as a formula get a leading "'"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, (int, float)):
        return _num(value)
    if isinstance(value, (list, tuple)):
        value = "; ".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = _dumps(value)
    value = str(value)
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def _csv(columns, rows) -> str:
    buf = io.StringIO()
    import csv  # only the csv format needs it

    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in columns])
    for row in rows:
        writer.writerow([csv_cell(row[c]) for c in columns])
    return buf.getvalue()


def to_csv(e: Export) -> str:
    return _csv(GENERATION_COLUMNS, e.generations)


def summary_csv(e: Export) -> str:
    return _csv(SUMMARY_COLUMNS, e.summary)


def agreement_rows(e: Export) -> list[tuple[str, Any]]:
    """The agreement (and preference totals) flattened to (key, value) pairs, in a fixed order."""
    a = e.agreement
    rows: list[tuple[str, Any]] = [("annotators", a["annotators"])]
    rows += [(f"ratings.{k}", v) for k, v in a["ratings"].items()]
    rows += [("labels.items", a["labels"]["items"]), ("labels.exact", a["labels"]["exact"])]
    for label, d in a["labels"]["per_label"].items():
        rows += [(f"labels.{label}.{k}", v) for k, v in d.items()]
    rows += [(f"preferences.{k}", v) for k, v in a["preferences"].items()]
    rows += [(f"preference_totals.{k}", v) for k, v in e.preferences.items()]
    return rows


def agreement_csv(e: Export) -> str:
    return _csv(("key", "value"), [{"key": k, "value": v} for k, v in agreement_rows(e)])


def render(e: Export, fmt: str) -> str:
    """The export as text in one format (csv: the answer records only)."""
    return {"csv": to_csv, "json": to_json, "jsonl": to_jsonl, "md": to_markdown}[fmt](e)


def outputs(e: Export, fmt: str, output: Path) -> dict[Path, str]:
    """Every file an export to ``output`` writes: the file itself, and for csv the summary and
    agreement beside it (``out.csv`` → ``out.summary.csv``, ``out.agreement.csv``)."""
    files = {output: render(e, fmt)}
    if fmt == "csv":
        stem = output.name[: -len(output.suffix)] if output.suffix else output.name
        files[output.with_name(stem + ".summary.csv")] = summary_csv(e)
        files[output.with_name(stem + ".agreement.csv")] = agreement_csv(e)
    return files


def write_files(files: dict[Path, str], protect: Path | None = None) -> list[Path]:
    """Write all files or none: each to a temporary file beside it, then renamed into place.
    ``protect`` (the session file) and its -wal/-shm/-journal are never overwritten."""
    guarded = set()
    if protect is not None:
        base = Path(protect).resolve()
        guarded = {base, *(Path(f"{base}{s}") for s in ("-wal", "-shm", "-journal"))}
    for path in files:
        if path.resolve() in guarded:
            raise ExportError(f"{path} is the session file itself; choose another output file")
        if path.is_dir():
            raise ExportError(f"{path} is a directory; give a file name for the export")
        if not path.parent.is_dir():
            raise ExportError(f"the folder {path.parent} does not exist; create it or choose another output path")
    temps: list[tuple[str, Path]] = []
    try:
        for n, (path, content) in enumerate(files.items()):
            # A temporary file beside the target, renamed over it once all are written. Named
            # here rather than by tempfile, whose import costs `overton export` start-up.
            tmp = str(path.parent / f".{path.name}.{os.getpid()}.{n}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            temps.append((tmp, path))
            os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    except OSError as exc:
        for tmp, _ in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise ExportError(f"cannot write the export: {exc.strerror or exc} ({exc.filename or ''})".rstrip(" ()"))
    return list(files)


def export_session(session: Session, fmt: str, output: Path, reference: str | None = None,
                   base: str | None = None, include_all: bool = False) -> list[Path]:
    """Build and write an export in one call (for the app); returns the files written. Raises
    ``ExportError`` or ``engine.stats.StatsError`` (both ValueErrors) with a message for the user;
    on any failure nothing is written."""
    fmt = format_for(fmt, output)
    output = Path(output).expanduser()
    data = build_export(session, reference=reference, base=base, include_all=include_all)
    return write_files(outputs(data, fmt, output), protect=session.path)


# --------------------------------------------------------------------------- Markdown


def _f(value: Any, digits: int = MD_DIGITS) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


_MD_SPECIAL = set("\\`*_[]<>|#~!")


def md_inline(text: Any) -> str:
    """One line of literal text: control characters visible, Markdown specials escaped."""
    flat = " ".join(printable(str(text)).split())
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in flat)


def md_block(text: str) -> str:
    """Literal text in a fence longer than any backtick run inside it (CommonMark)."""
    text = printable(text)
    longest, start = 0, text.find("`")
    while start >= 0:  # the longest backtick run (a character loop cost ms per answer)
        end = start + 1
        while end < len(text) and text[end] == "`":
            end += 1
        longest = max(longest, end - start)
        start = text.find("`", end)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _cut(text: str, limit: int = MD_ANSWER_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def to_markdown(e: Export) -> str:
    c = e.counts
    lines = [f"# overton export: {md_inline(e.session)}", ""]
    lines.append(f"- session file: {md_inline(e.session)}")
    ref_note = f"{md_inline(e.reference)} sample 0" if e.reference_found else \
        f"{md_inline(e.reference)} (not in this session: no similarity or coverage)"
    lines.append(f"- reference: {ref_note}; base: {md_inline(e.base) if e.base else '–'}")
    lines.append(f"- prompts: {c['prompts']} ({c['prompts_exported']} with answers or preferences); "
                 f"answers: {c['generations']} ({c['generations_in_stats']} counted in the statistics)")
    annotators = ", ".join(md_inline(a) for a in e.agreement["annotators"]) or "none"
    lines.append(f"- annotations: {c['annotations']} by {c['annotators']} annotator"
                 f"{'' if c['annotators'] == 1 else 's'} ({annotators})")
    lines += ["", "## Summary per condition", ""]
    if not e.summary:
        lines.append("No answers yet.")
    else:
        head = ["condition", "prompts", "samples", "words", "diversity", "similarity", "coverage", "gap closed",
                "abstain", "ratings", "mean rating", "labels", "notes", "preferred"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|---|" + "---:|" * (len(head) - 1))
        for s in e.summary:
            name = md_inline(s["condition"]) + (" \\*" if s["is_reference"] else "")
            labels = ", ".join(f"{md_inline(k)} {v}" for k, v in s["label_counts"].items()) or "–"
            lines.append("| " + " | ".join([
                name, str(s["prompts"]), str(s["samples"]), _f(s["mean_words"], 0), _f(s["diversity"]),
                _f(s["similarity"]), _f(s["coverage"]), _f(s["gap_closed"]), _pct(s["abstain_rate"]),
                str(s["ratings"]), _f(s["mean_rating"], 2), labels, str(s["notes"]), str(s["preference_wins"]),
            ]) + " |")
        lines += ["", f"\\* the reference: its samples 1..n-1 against its sample 0 (the ceiling). "
                      f"similarity, coverage: Jaccard and coverage of word bags against "
                      f"{md_inline(e.reference)} sample 0; gap closed: (sim − sim(base)) ÷ (ceiling − sim(base)); "
                      "ratings: 1–5, every annotator's rating counted; preferred: prompts where an annotator "
                      "chose this condition as best."]
    p = e.preferences
    if p.get("preferences"):
        lines += ["", f"Preferences: {p['preferences']} on {_n(p['prompts'], 'prompt')}; "
                      f"tie {p.get(ann.TIE, 0)}, all bad {p.get(ann.ALL_BAD, 0)}."]

    lines += ["", "## Agreement between annotators", ""]
    a = e.agreement
    if len(a["annotators"]) < 2:
        lines.append("Fewer than two annotators: nothing to compare.")
    else:
        r = a["ratings"]
        lines.append(f"- ratings: {_n(r['generations'], 'answer')} rated by several annotators, {_n(r['pairs'], 'pair')}; "
                     f"exact {_pct(r['exact'])}, within one point {_pct(r['within_one'])}, "
                     f"mean absolute difference {_f(r['mean_abs_diff'])}")
        lb = a["labels"]
        lines.append(f"- labels: {_n(lb['items'], 'annotator pair')} on shared answers; same label set {_pct(lb['exact'])}")
        for label, d in lb["per_label"].items():
            lines.append(f"  - {md_inline(label)}: agreement {_pct(d['observed'])}, Cohen's kappa {_f(d['kappa'])}")
        pr = a["preferences"]
        lines.append(f"- preferences: {_n(pr['prompts'], 'prompt')} with several, {_n(pr['pairs'], 'pair')}; "
                     f"same choice {_pct(pr['exact'])}")

    lines += ["", "## Prompts"]
    by_prompt: dict[str, list[dict]] = {}
    for r in e.generations:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    for n, prompt in enumerate(e.prompts, start=1):
        title = md_inline(prompt["external_id"]) if prompt["external_id"] else md_inline(prompt["id"])
        lines += ["", f"### {n}. {title}", "", md_block(prompt["text"])]
        records = by_prompt.get(prompt["id"], [])
        prefs = prompt["preference_by_annotator"]
        if prefs:
            lines += ["", "Preferred: " + "; ".join(f"{md_inline(k)}: {md_inline(v)}" for k, v in prefs.items())]
        for r in records:
            facts = [_n(r['words'], 'word')]
            if r["similarity"] is not None:
                facts.append(f"similarity {_f(r['similarity'])}")
            if r["coverage"] is not None:
                facts.append(f"coverage {_f(r['coverage'])}")
            if not r["in_stats"]:
                facts.append("not in the statistics")
            lines += ["", f"#### {md_inline(r['condition'])} · sample {r['sample_index']} · " + " · ".join(facts)]
            notes = []
            if r["ratings"]:
                each = ", ".join(f"{md_inline(k)} {v}" for k, v in r["ratings"].items())
                notes.append(f"rating {_f(r['rating'], 2)} ({each})")
            if r["labels"]:
                notes.append("labels: " + "; ".join(
                    f"{md_inline(k)}: {', '.join(md_inline(x) for x in v)}"
                    for k, v in r["labels_by_annotator"].items()))
            if notes:
                lines += ["", " · ".join(notes)]
            lines += ["", md_block(_cut(r["text"] or ""))]
            for who, note in r["notes"].items():
                lines += [""] + [f"> **{md_inline(who)}:** " + md_inline(line) if i == 0 else "> " + md_inline(line)
                                 for i, line in enumerate(note.splitlines() or [""])]
    return "\n".join(lines) + "\n"

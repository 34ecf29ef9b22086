"""Prompt files for batch runs: plain text (one prompt a line) or JSONL.

JSONL lines are ``{"id", "prompt"}`` or the chat form ``{"id"?, "messages": [{"role": "user",
"content": ...}, ...]}`` (the first user turn is the prompt). A prompt without an id gets one
from its text, so re-running the same file finds the same prompts and resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


class PromptFileError(ValueError):
    pass


@dataclass(frozen=True)
class PromptLine:
    id: str
    text: str
    line: int


def text_id(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


def _from_json(row, n: int, path: Path) -> PromptLine:
    if not isinstance(row, dict):
        raise PromptFileError(f"{path}:{n}: expected a JSON object")
    text = row.get("prompt")
    if text is None and isinstance(row.get("messages"), list):
        users = [m.get("content") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        text = users[0] if users else None
    if not isinstance(text, str) or not text.strip():
        raise PromptFileError(f"{path}:{n}: needs a non-empty \"prompt\" string or a user turn in \"messages\"")
    pid = row.get("id")
    if pid is not None and not isinstance(pid, (str, int)):
        raise PromptFileError(f"{path}:{n}: \"id\" must be a string or a number")
    return PromptLine(str(pid) if pid is not None else text_id(text), text.strip(), n)


def read_prompts(path: Path) -> list[PromptLine]:
    """The prompts of ``path``; every bad line is reported at once (PromptFileError)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PromptFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"{path} is not UTF-8 text (byte {exc.start})") from exc
    lines = content.splitlines()
    suffix = path.suffix.lower()
    # The suffix decides; only a file with neither suffix is sniffed.
    jsonl = suffix in (".jsonl", ".json") or (
        suffix not in (".txt", ".text", ".md") and bool(lines) and lines[0].lstrip().startswith("{"))
    out: list[PromptLine] = []
    errors: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not jsonl:
            out.append(PromptLine(text_id(line), line.strip(), n))
            continue
        try:
            out.append(_from_json(json.loads(line), n, path))
        except ValueError as exc:
            errors.append(str(exc) if isinstance(exc, PromptFileError) else f"{path}:{n}: not valid JSON ({exc.msg})")
    unique: list[PromptLine] = []
    seen: dict[str, PromptLine] = {}
    for p in out:
        if p.id not in seen:
            seen[p.id] = p
            unique.append(p)
        elif jsonl and p.id != text_id(p.text):  # a given id used twice is a mistake
            errors.append(f"{path}:{p.line}: id {p.id!r} already used on line {seen[p.id].line}")
        # the same prompt text twice (no id given) is run once
    if errors:
        raise PromptFileError("\n".join(errors))
    if not unique:
        raise PromptFileError(f"{path} holds no prompts")
    return unique

"""Plain-language messages for failures that reach the user from libraries (SQLite, Jinja),
shared by the CLI and the app. No textual, torch or jinja2 import at module level: the headless
commands use it.
"""

from __future__ import annotations

import sqlite3


def is_invalid_text(text: str | None) -> bool:
    """True when ``text`` holds lone surrogates: bytes that were not UTF-8 (a terminal in another
    encoding, a Latin-1 file name) reach Python as such, and nothing can tokenize or store them."""
    if text is None:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_template_error(exc: BaseException) -> tuple[bool, bool]:
    """(is a Jinja template error, is a sandbox SecurityError), without importing jinja2 first."""
    if not type(exc).__module__.startswith("jinja2"):
        return False, False
    from jinja2.exceptions import SecurityError, TemplateError

    return isinstance(exc, TemplateError), isinstance(exc, SecurityError)


def user_message(exc: BaseException, session_path: object = None) -> str | None:
    """What to tell the user about ``exc``, or None when it is not a known kind of failure."""
    template, unsafe = _is_template_error(exc)
    if unsafe:
        return (f"the aligned model's chat template tried something unsafe and was stopped by the sandbox "
                f"it is rendered in ({exc}); nothing was generated. Use another aligned model or fix its "
                "chat template.")
    if template:
        return (f"the aligned model's chat template cannot be rendered ({exc}); it is rendered in a sandbox, "
                "and nothing was generated. Use another aligned model or fix its chat template.")
    if isinstance(exc, sqlite3.Error):
        where = f" {session_path}" if session_path else ""
        text = str(exc)
        if "full" in text:
            why = "the disk (or the session's size limit) is full"
        elif "readonly" in text or "read-only" in text:
            why = "the session file or its folder is read-only"
        elif "locked" in text or "busy" in text:
            why = "another program held the session's write lock too long"
        elif "malformed" in text or "not a database" in text:
            why = f"the session file is damaged ({text})"
        else:
            why = text
        return (f"could not write to the session{where}: {why}. What was stored before is kept; "
                "free space or fix the permissions, then run again.")
    return None

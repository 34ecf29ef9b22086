"""Makes model and file text safe to show on a terminal, literally."""

from __future__ import annotations

import re

# C0 and C1 control characters except tab and newline; ESC starts terminal escape sequences.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    # Control Pictures block shows C0 characters as symbols (ESC -> ␛); others as \xNN.
    return chr(0x2400 + code) if code < 0x20 else ("\u2421" if code == 0x7F else f"\\x{code:02x}")


def printable(text: str) -> str:
    """``text`` with control characters replaced by visible stand-ins; CR LF becomes LF."""
    return _CONTROL.sub(_visible, text.replace("\r\n", "\n"))

"""Makes model and file text safe to show on a terminal, literally."""

from __future__ import annotations

import re

# C0 and C1 control characters except tab and newline; ESC starts terminal escape sequences.
# Lone surrogates too: they are how Python carries bytes that were not UTF-8 (argv, file names
# with surrogateescape), and writing one to a UTF-8 terminal raises UnicodeEncodeError.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    # Control Pictures block shows C0 characters as symbols (ESC -> ␛); others as \xNN.
    if code >= 0xD800:  # a surrogate: an undecodable byte (U+DC80..U+DCFF) shows as that byte
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else "\ufffd"
    return chr(0x2400 + code) if code < 0x20 else ("\u2421" if code == 0x7F else f"\\x{code:02x}")


def printable(text: str) -> str:
    """``text`` with control characters replaced by visible stand-ins (undecodable bytes as
    ``\\xNN``); CR LF becomes LF."""
    return _CONTROL.sub(_visible, text.replace("\r\n", "\n"))

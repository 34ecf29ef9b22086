"""A rich Console made on first use.

Importing ``rich.console`` (and the table and text modules it pulls in) costs about 20 ms,
which ``overton --help`` never needs; the commands create their consoles at module level, so
they hold a ``LazyConsole`` instead, which builds the real one the first time it is used.
"""

from __future__ import annotations

from typing import Any


class LazyConsole:
    """Stands for ``rich.console.Console(**options)``; ``real`` is the console itself (give that
    to code that needs a true Console instance)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console = None

    @property
    def real(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def __enter__(self):
        return self.real.__enter__()

    def __exit__(self, *exc):
        return self.real.__exit__(*exc)

"""overton's user interfaces: the Typer CLI (tui.cli) and the Textual app (tui.app).

This package's import stays free of textual and torch so headless commands start fast.
"""

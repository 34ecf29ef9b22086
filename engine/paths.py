"""Where overton keeps its files: converted-model cache and session databases."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "OVERTON_CACHE_DIR"
SESSIONS_ENV = "OVERTON_SESSIONS_DIR"


def cache_dir() -> Path:
    """Converted models live here; ``$OVERTON_CACHE_DIR`` overrides the platform cache dir."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("overton"))


def sessions_dir() -> Path:
    """Default home of session databases: ``$OVERTON_SESSIONS_DIR`` or ``./sessions``."""
    override = os.environ.get(SESSIONS_ENV)
    return Path(override).expanduser() if override else Path("sessions")

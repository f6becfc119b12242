"""Where painters keeps downloaded models and built engines ($PAINTERS_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path:
    """Return (and create) a directory under ``$PAINTERS_CACHE`` (default ``~/.cache/painters``)."""
    root = Path(os.environ.get("PAINTERS_CACHE") or Path.home() / ".cache" / "painters")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path

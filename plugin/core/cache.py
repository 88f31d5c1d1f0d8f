"""The on-disk cache of derived statistics (context templates, key second moments).

Entries are JSON or safetensors files whose name *and* stored metadata carry their key; an
entry whose stored key does not match what was asked for is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$TOPLENS_CACHE_DIR`` if set, else ``~/.cache/toplens``."""
    root = os.environ.get("TOPLENS_CACHE_DIR") or Path.home() / ".cache" / "toplens"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def key_digest(key: dict[str, Any]) -> str:
    """A stable short hash of a JSON-able key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def clear_cache() -> int:
    """Delete every cached entry; returns how many files were removed."""
    removed = 0
    for path in cache_dir().glob("*"):
        if path.is_file():
            path.unlink()
            removed += 1
    return removed

"""The on-disk cache of derived statistics (context templates, key second moments).

Entries are JSON or safetensors files whose name *and* stored metadata carry their key; an
entry whose stored key does not match what was asked for is ignored and recomputed. Entries are
written to a temporary file and renamed into place, so a reader never sees half a file, even
with several processes sharing the folder; a file that cannot be read or fails its check is
recomputed, with a warning that names it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

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


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary path)`` and rename the result onto ``path`` (atomic on one file system)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, content: Any) -> None:
    """Write a JSON cache entry atomically."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(content, indent=1), encoding="utf-8"))


def read_json(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON entry stored under ``key``, or None (with a warning naming the file) when it is
    unreadable, not an object, or stored under another key."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("cache file %s is unreadable (%s); recomputing it", path, err)
        return None
    if not isinstance(stored, dict) or stored.get("key") != key:
        logger.warning("cache file %s was stored under another key; recomputing it", path)
        return None
    return stored


def clear_cache() -> int:
    """Delete every cached entry; returns how many files were removed."""
    removed = 0
    for path in cache_dir().glob("*"):
        if path.is_file() and not path.name.endswith(".tmp"):  # another process' entry being written
            path.unlink()
            removed += 1
    return removed

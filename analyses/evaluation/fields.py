"""Reading fields of JSON records with errors that name the record (its id or index) and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from toplens.analyses.evaluation.records import DatasetError


def record_label(raw: Any, index: int) -> str:
    """How a record is named in messages: by its id where it has one, always by its index."""
    if isinstance(raw, Mapping):
        for key in ("case_id", "known_id"):
            if key in raw:
                return f"record {key}={raw[key]!r} (index {index})"
    return f"record at index {index}"


def short(value: Any) -> str:
    """``repr(value)``, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def typed_field(raw: Mapping[str, Any], field: str, label: str, kind: type | tuple[type, ...]) -> Any:
    """``raw[field]``, which must be present and of ``kind`` (never a bool)."""
    if field not in raw:
        raise DatasetError(f"{label}: missing field {field!r}")
    value = raw[field]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetError(f"{label}: field {field!r} has the wrong type; got {short(value)}")
    return value


def string_list(raw: Mapping[str, Any], field: str, label: str, *, required: bool) -> tuple[str, ...] | None:
    """A list of non-empty strings, or None when the field is absent and not required."""
    if field not in raw and not required:
        return None
    value = typed_field(raw, field, label, list)
    bad = [i for i, v in enumerate(value) if not isinstance(v, str) or not v.strip()]
    if bad:
        raise DatasetError(f"{label}: field {field!r} item {bad[0]} must be a non-empty string; "
                           f"got {short(value[bad[0]])}")
    return tuple(value)


def read_json_list(path: str | Path) -> list[Any]:
    """A JSON file whose top level is a list."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of records; got {type(data).__name__}")
    return data

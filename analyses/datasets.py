"""Readers for CounterFact, COUNTERFACT_RS and ROME's known-facts JSON files.

All three are JSON lists of objects. CounterFact records have ``requested_rewrite``;
COUNTERFACT_RS records add ``relation_specific_prompts``; known facts have ``known_id``,
``subject``, ``template`` and ``attribute`` and are turned into records by the builder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from toplens import EditRequest, RequestError

from toplens.analyses.records import DatasetError, Record

COUNTERFACT, COUNTERFACT_RS, KNOWN_FACTS = "counterfact", "counterfact_rs", "known_facts"
_PROMPT_LISTS = ("paraphrase_prompts", "neighborhood_prompts", "attribute_prompts", "generation_prompts")


@dataclass(frozen=True)
class KnownFact:
    """One entry of ROME's known-facts file: ``template.format(subject)`` is completed by
    ``attribute``; ``prompt`` is where the model's own prediction began (often a longer text)."""

    known_id: int
    subject: str
    attribute: str
    template: str
    prompt: str
    relation_id: str
    prediction: str = ""


def _label(raw: Any, index: int) -> str:
    """How a record is named in messages: by its id where it has one, always by its index."""
    if isinstance(raw, Mapping):
        for key in ("case_id", "known_id"):
            if key in raw:
                return f"record {key}={raw[key]!r} (index {index})"
    return f"record at index {index}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _field(raw: Mapping[str, Any], field: str, label: str, kind: type | tuple[type, ...]) -> Any:
    if field not in raw:
        raise DatasetError(f"{label}: missing field {field!r}")
    value = raw[field]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetError(f"{label}: field {field!r} has the wrong type; got {_short(value)}")
    return value


def _strings(raw: Mapping[str, Any], field: str, label: str, *, required: bool) -> tuple[str, ...] | None:
    """A list of strings, or None when the field is absent and not required."""
    if field not in raw and not required:
        return None
    value = _field(raw, field, label, list)
    bad = [i for i, v in enumerate(value) if not isinstance(v, str) or not v.strip()]
    if bad:
        raise DatasetError(f"{label}: field {field!r} item {bad[0]} must be a non-empty string; "
                           f"got {_short(value[bad[0]])}")
    return tuple(value)


def _request(raw: Mapping[str, Any], label: str) -> EditRequest:
    rewrite = _field(raw, "requested_rewrite", label, Mapping)
    for name in ("target_new", "target_true"):
        target = rewrite.get(name)
        if isinstance(target, Mapping) and not isinstance(target.get("str"), str):
            raise DatasetError(f"{label}: field 'requested_rewrite.{name}.str' must be a string; "
                               f"got {_short(target.get('str'))}")
    try:
        return EditRequest.from_counterfact(rewrite)
    except (RequestError, TypeError) as err:
        raise DatasetError(f"{label}: field 'requested_rewrite': {err}") from err


def parse_record(raw: Any, index: int, *, relation_specific: bool) -> Record:
    """One CounterFact (or, with ``relation_specific``, COUNTERFACT_RS) record."""
    label = _label(raw, index)
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{label}: expected a JSON object; got {_short(raw)}")
    case_id = _field(raw, "case_id", label, (int, str))
    request = _request(raw, label)
    lists = {name: _strings(raw, name, label, required=name.startswith(("paraphrase", "neighborhood")))
             for name in _PROMPT_LISTS}
    rs = _strings(raw, "relation_specific_prompts", label, required=relation_specific)
    neighbors = _strings(raw, "neighborhood_targets", label, required=False)
    try:
        return Record(
            case_id, request, **{k: v or () for k, v in lists.items()},
            relation_specific_prompts=rs or (),
            reference_texts=_strings(raw, "reference_texts", label, required=False),
            relation_id=raw["requested_rewrite"].get("relation_id"),
            neighborhood_targets=None if neighbors is None else tuple(" " + t.lstrip() for t in neighbors),
        )
    except DatasetError as err:
        raise DatasetError(f"{label}: {err}") from err


def parse_known_fact(raw: Any, index: int) -> KnownFact:
    """One entry of ROME's known-facts file."""
    label = _label(raw, index)
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{label}: expected a JSON object; got {_short(raw)}")
    texts = {name: _field(raw, name, label, str)
             for name in ("subject", "attribute", "template", "prompt", "relation_id")}
    for name, value in texts.items():
        if not value.strip():
            raise DatasetError(f"{label}: field {name!r} must not be empty")
    if texts["template"].count("{}") != 1:
        raise DatasetError(f"{label}: field 'template' must contain one '{{}}'; got {texts['template']!r}")
    prediction = raw.get("prediction", "")
    return KnownFact(_field(raw, "known_id", label, int), prediction=prediction if isinstance(prediction, str) else "",
                     **texts)


def read_json_list(path: str | Path) -> list[Any]:
    """A JSON file whose top level is a list."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of records; got {type(data).__name__}")
    return data


def detect_format(data: Sequence[Any]) -> str:
    """COUNTERFACT, COUNTERFACT_RS or KNOWN_FACTS, judged by the first record's fields."""
    first = data[0] if data else None
    if not isinstance(first, Mapping):
        raise DatasetError(f"{_label(first, 0)}: expected a JSON object; got {_short(first)}")
    if "requested_rewrite" in first:
        return COUNTERFACT_RS if "relation_specific_prompts" in first else COUNTERFACT
    if {"known_id", "template", "attribute"} <= set(first):
        return KNOWN_FACTS
    raise DatasetError(f"{_label(first, 0)}: cannot tell the format from its fields {sorted(first)}; "
                       "expected 'requested_rewrite' (CounterFact) or 'known_id'/'template'/'attribute'")


def read_counterfact(path: str | Path, *, relation_specific: bool = False) -> tuple[Record, ...]:
    """A CounterFact file; with ``relation_specific`` every record needs relation-specific prompts."""
    return tuple(parse_record(raw, i, relation_specific=relation_specific)
                 for i, raw in enumerate(read_json_list(path)))


def read_counterfact_rs(path: str | Path) -> tuple[Record, ...]:
    """A COUNTERFACT_RS file."""
    return read_counterfact(path, relation_specific=True)


def read_known_facts(path: str | Path) -> tuple[KnownFact, ...]:
    """ROME's known-facts file (e.g. known_1000.json)."""
    return tuple(parse_known_fact(raw, i) for i, raw in enumerate(read_json_list(path)))


def load_records(path: str | Path, *, seed: int = 0) -> tuple[Record, ...]:
    """Records from any of the three formats, detected from the first record; known facts are
    built into COUNTERFACT_RS records (``seed`` picks their new targets)."""
    data = read_json_list(path)
    if not data:
        return ()
    fmt = detect_format(data)
    if fmt == KNOWN_FACTS:
        from toplens.analyses.builder import records_from_known_facts  # the builder imports this module

        return records_from_known_facts([parse_known_fact(raw, i) for i, raw in enumerate(data)], seed=seed)
    return tuple(parse_record(raw, i, relation_specific=fmt == COUNTERFACT_RS) for i, raw in enumerate(data))


def save_records(records: Iterable[Record], path: str | Path) -> None:
    """Write records as a COUNTERFACT_RS JSON file (readable by ``load_records``)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump([r.to_dict() for r in records], f, indent=1, ensure_ascii=False)
        f.write("\n")

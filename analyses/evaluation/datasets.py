"""Readers for CounterFact, COUNTERFACT_RS and ROME's known-facts JSON files, and for edit requests.

All three are JSON lists of objects. CounterFact records have ``requested_rewrite``;
COUNTERFACT_RS records add ``relation_specific_prompts``; known facts have ``known_id``,
``subject``, ``template`` and ``attribute`` and are turned into records by the builder
(:mod:`toplens.analyses.evaluation.known_facts`). :func:`load_dataset` also knows "builtin", the
built-in benchmark; :func:`read_requests` reads a batch of edit requests.
"""

from __future__ import annotations

from collections import abc

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from toplens import EditRequest, RequestError

from toplens.analyses.evaluation.builder import builtin_records
from toplens.analyses.evaluation.fields import read_json_list, record_label, short, string_list, typed_field
from toplens.analyses.evaluation.known_facts import parse_known_fact, records_from_known_facts
from toplens.analyses.evaluation.records import DatasetError, Record

COUNTERFACT, COUNTERFACT_RS, KNOWN_FACTS = "counterfact", "counterfact_rs", "known_facts"
_PROMPT_LISTS = ("paraphrase_prompts", "neighborhood_prompts", "attribute_prompts", "generation_prompts")


def _request(raw: Mapping[str, Any], label: str) -> EditRequest:
    rewrite = typed_field(raw, "requested_rewrite", label, abc.Mapping)
    for name in ("target_new", "target_true"):
        target = rewrite.get(name)
        if isinstance(target, Mapping) and not isinstance(target.get("str"), str):
            raise DatasetError(f"{label}: field 'requested_rewrite.{name}.str' must be a string; "
                               f"got {short(target.get('str'))}")
    try:
        return EditRequest.from_counterfact(rewrite)
    except (RequestError, TypeError) as err:
        raise DatasetError(f"{label}: field 'requested_rewrite': {err}") from err


def parse_record(raw: Any, index: int, *, relation_specific: bool) -> Record:
    """One CounterFact (or, with ``relation_specific``, COUNTERFACT_RS) record."""
    label = record_label(raw, index)
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{label}: expected a JSON object; got {short(raw)}")
    case_id = typed_field(raw, "case_id", label, (int, str))
    request = _request(raw, label)
    lists = {name: string_list(raw, name, label, required=name.startswith(("paraphrase", "neighborhood")))
             for name in _PROMPT_LISTS}
    rs = string_list(raw, "relation_specific_prompts", label, required=relation_specific)
    neighbors = string_list(raw, "neighborhood_targets", label, required=False)
    try:
        return Record(
            case_id, request, **{k: v or () for k, v in lists.items()},
            relation_specific_prompts=rs or (),
            reference_texts=string_list(raw, "reference_texts", label, required=False),
            relation_id=raw["requested_rewrite"].get("relation_id"),
            neighborhood_targets=None if neighbors is None else tuple(" " + t.lstrip() for t in neighbors),
        )
    except DatasetError as err:
        raise DatasetError(f"{label}: {err}") from err


def detect_format(data: Sequence[Any]) -> str:
    """COUNTERFACT, COUNTERFACT_RS or KNOWN_FACTS, judged by the first record's fields."""
    first = data[0] if data else None
    if not isinstance(first, Mapping):
        raise DatasetError(f"{record_label(first, 0)}: expected a JSON object; got {short(first)}")
    if "requested_rewrite" in first:
        return COUNTERFACT_RS if "relation_specific_prompts" in first else COUNTERFACT
    if {"known_id", "template", "attribute"} <= set(first):
        return KNOWN_FACTS
    raise DatasetError(f"{record_label(first, 0)}: cannot tell the format from its fields {sorted(first)}; "
                       "expected 'requested_rewrite' (CounterFact) or 'known_id'/'template'/'attribute'")


def read_counterfact(path: str | Path, *, relation_specific: bool = False) -> tuple[Record, ...]:
    """A CounterFact file; with ``relation_specific`` every record needs relation-specific prompts."""
    return tuple(parse_record(raw, i, relation_specific=relation_specific)
                 for i, raw in enumerate(read_json_list(path)))


def read_counterfact_rs(path: str | Path) -> tuple[Record, ...]:
    """A COUNTERFACT_RS file."""
    return read_counterfact(path, relation_specific=True)


def load_records(path: str | Path, *, seed: int = 0) -> tuple[Record, ...]:
    """Records from any of the three formats, detected from the first record; known facts are
    built into COUNTERFACT_RS records (``seed`` picks their new targets)."""
    data = read_json_list(path)
    if not data:
        return ()
    fmt = detect_format(data)
    if fmt == KNOWN_FACTS:
        return records_from_known_facts([parse_known_fact(raw, i) for i, raw in enumerate(data)], seed=seed)
    return tuple(parse_record(raw, i, relation_specific=fmt == COUNTERFACT_RS) for i, raw in enumerate(data))


def save_records(records: Iterable[Record], path: str | Path) -> None:
    """Write records as a COUNTERFACT_RS JSON file (readable by ``load_records``)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump([r.to_dict() for r in records], f, indent=1, ensure_ascii=False)
        f.write("\n")


def load_dataset(source: str | Path, *, limit: int | None = None, seed: int = 0) -> tuple[Record, ...]:
    """The records of ``source``: ``"builtin"`` (the built-in benchmark), ``"builtin-questions"``
    (the same facts in question form) or a file in any of the three formats (:func:`load_records`),
    cut to the first ``limit``."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1; got {limit}")
    if str(source) in ("builtin", "builtin-questions"):
        return builtin_records(limit, seed=seed, form="statement" if str(source) == "builtin" else "question")
    if not Path(source).is_file():
        raise ValueError(f"the data must be 'builtin', 'builtin-questions' or a JSON file; {str(source)!r} is not a file")
    records = load_records(source, seed=seed)
    return records if limit is None else records[:limit]


def read_requests(path: str | Path) -> list[EditRequest]:
    """Edit requests from a JSON list of CounterFact ``requested_rewrite`` objects (or whole records)."""
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"requests file {str(path)!r}: cannot read a JSON list ({err})") from err
    if not isinstance(items, list) or not items:
        raise ValueError(f"requests file {str(path)!r}: expected a non-empty JSON list of requests")
    requests = []
    for i, item in enumerate(items):
        rewrite = item.get("requested_rewrite", item) if isinstance(item, dict) else item
        if not isinstance(rewrite, dict):
            raise ValueError(f"requests file {str(path)!r}: item {i} is not an object: {item!r}")
        try:
            requests.append(EditRequest.from_counterfact(rewrite))
        except ValueError as err:
            raise ValueError(f"requests file {str(path)!r}: item {i}: {err}") from err
    return requests

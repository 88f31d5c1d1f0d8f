"""ROME's known-facts file (e.g. known_1000.json) and the COUNTERFACT_RS records built from it.

Each entry has ``known_id``, ``subject``, ``template``, ``attribute`` and ``relation_id``. The
records group the file's templates by relation (the paraphrases) and take subject kinds from
:data:`KNOWN_KINDS` (for relation-specific prompts); :mod:`toplens.analyses.evaluation.builder` builds them.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from toplens.analyses.evaluation.builder import BuildOptions, Fact, Relation, build_records
from toplens.analyses.evaluation.fields import read_json_list, record_label, short, typed_field
from toplens.analyses.evaluation.records import DatasetError, Record


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



def parse_known_fact(raw: Any, index: int) -> KnownFact:
    """One entry of ROME's known-facts file."""
    label = record_label(raw, index)
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{label}: expected a JSON object; got {short(raw)}")
    texts = {name: typed_field(raw, name, label, str)
             for name in ("subject", "attribute", "template", "prompt", "relation_id")}
    for name, value in texts.items():
        if not value.strip():
            raise DatasetError(f"{label}: field {name!r} must not be empty")
    if texts["template"].count("{}") != 1:
        raise DatasetError(f"{label}: field 'template' must contain one '{{}}'; got {texts['template']!r}")
    prediction = raw.get("prediction", "")
    return KnownFact(typed_field(raw, "known_id", label, int), **texts,
                     prediction=prediction if isinstance(prediction, str) else "")



def read_known_facts(path: str | Path) -> tuple[KnownFact, ...]:
    """ROME's known-facts file (e.g. known_1000.json)."""
    return tuple(parse_known_fact(raw, i) for i, raw in enumerate(read_json_list(path)))


KNOWN_KINDS = {  # subject kind of each known-facts relation (Wikidata ids)
    **dict.fromkeys(["P19", "P20", "P27", "P39", "P101", "P103", "P106", "P108", "P136", "P140",
                     "P413", "P641", "P937", "P1303", "P1412"], "person"),
    **dict.fromkeys(["P36", "P37"], "country"),
    **dict.fromkeys(["P17", "P30", "P131", "P190", "P276", "P138"], "place"),
    **dict.fromkeys(["P159", "P463", "P740", "P127"], "organization"),
    **dict.fromkeys(["P176", "P178"], "product"),
    **dict.fromkeys(["P364", "P407", "P449", "P495"], "work"),
}


def known_templates(knowns: Sequence[KnownFact]) -> dict[str, str]:
    """Each template as used: extended by " of" where some fact's prompt was exactly that (ROME's
    file has "{} is located in the continent" whose prompts end "... continent of")."""
    extended = {k.template for k in knowns if k.prompt == k.template.replace("{}", k.subject) + " of"}
    return {k.template: k.template + " of" if k.template in extended else k.template for k in knowns}


def known_relations(knowns: Sequence[KnownFact]) -> dict[str, Relation]:
    """Each relation's distinct templates in the file, most used first."""
    fixed = known_templates(knowns)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for k in knowns:
        counts[k.relation_id][fixed[k.template]] += 1
    return {rid: Relation(rid, tuple(sorted(c, key=lambda t: (-c[t], t)))) for rid, c in counts.items()}


def _first_per_subject_relation(knowns: Sequence[KnownFact]) -> list[KnownFact]:
    """The file repeats a few (subject, relation) pairs; keep the first of each."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for k in knowns:
        if (k.subject, k.relation_id) not in seen:
            seen.add((k.subject, k.relation_id))
            unique.append(k)
    return unique


def records_from_known_facts(source: str | os.PathLike | Sequence[KnownFact], *, seed: int = 0) -> tuple[Record, ...]:
    """COUNTERFACT_RS records from ROME's known facts (a path, or KnownFact entries): templates
    from the file grouped by relation_id, subject kinds from KNOWN_KINDS; ``case_id`` = known_id."""
    knowns = read_known_facts(source) if isinstance(source, (str, os.PathLike)) else list(source)
    unique = _first_per_subject_relation(knowns)
    fixed = known_templates(knowns)
    facts = [Fact(k.subject, k.relation_id, k.attribute, KNOWN_KINDS.get(k.relation_id, k.relation_id),
                  fixed[k.template]) for k in unique]
    return build_records(facts, known_relations(knowns), options=BuildOptions(seed=seed),
                         case_ids=[k.known_id for k in unique])

"""Build COUNTERFACT_RS records from a table of facts and each relation's prompt templates.

For each fact (subject, relation, object, subject kind):
- ``target_new``: another object of the same relation, drawn with a seeded ``random.Random``;
- paraphrases: the relation's other templates, filled with the subject;
- neighborhood: other subjects with the same relation and the same true object; when there are too
  few, other subjects of the relation (their own objects are kept in ``neighborhood_targets``);
- relation-specific: the subject's other relations; when the subject has no other fact, the
  relations of other subjects of the same kind (person, country, company...), filled with it.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping, Sequence

from toplens import EditRequest

from toplens.analyses.evaluation.records import DatasetError, Record

log = logging.getLogger(__name__)

GENERATION_TEMPLATES = ("{} is known for", "The most important thing about {} is", "{} is")


@dataclass(frozen=True)
class Fact:
    """A fact; ``obj`` is written without a leading space; ``prompt`` overrides the relation's
    first template as the rewrite prompt."""

    subject: str
    relation: str
    obj: str
    kind: str
    prompt: str | None = None


@dataclass(frozen=True)
class Relation:
    """A relation's prompt templates, each with one ``{}`` for the subject; the first is the
    rewrite prompt unless a fact brings its own."""

    id: str
    templates: tuple[str, ...]
    name: str = ""

    def __post_init__(self) -> None:
        bad = [t for t in self.templates if t.count("{}") != 1]
        if not self.templates or bad:
            raise DatasetError(f"relation {self.id!r}: field 'templates' needs templates with one '{{}}'; "
                               f"got {list(self.templates)!r}")


@dataclass(frozen=True)
class BuildOptions:
    """How many prompts of each kind a record gets, at most."""

    seed: int = 0
    n_neighborhood: int = 10
    n_relation_specific: int = 10
    min_neighborhood_same_object: int = 4
    generation_templates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class _Index:
    """Look-ups over the fact table: by relation, by (relation, object), by subject, by kind."""

    def __init__(self, facts: Sequence[Fact]) -> None:
        self.by_relation: dict[str, list[Fact]] = defaultdict(list)
        self.by_object: dict[tuple[str, str], list[Fact]] = defaultdict(list)
        self.by_subject: dict[str, list[Fact]] = defaultdict(list)
        self.kind_relations: dict[str, set[str]] = defaultdict(set)
        for f in facts:
            self.by_relation[f.relation].append(f)
            self.by_object[f.relation, f.obj].append(f)
            self.by_subject[f.subject].append(f)
            self.kind_relations[f.kind].add(f.relation)

    def objects(self, relation: str) -> list[str]:
        return sorted({f.obj for f in self.by_relation[relation]})


def _check_facts(facts: Sequence[Fact], relations: Mapping[str, Relation]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for i, f in enumerate(facts):
        if f.relation not in relations:
            raise DatasetError(f"fact {i} ({f.subject!r}): field 'relation' {f.relation!r} has no templates")
        if (f.subject, f.relation) in seen:
            raise DatasetError(f"fact {i} ({f.subject!r}): field 'relation' {f.relation!r} repeats fact "
                               f"{seen[f.subject, f.relation]}")
        seen[f.subject, f.relation] = i


def _fill(template: str, subject: str) -> str:
    return template.replace("{}", subject)


def _neighbors(fact: Fact, target_new: str, index: _Index, relation: Relation,
               rng: random.Random, opts: BuildOptions) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """Neighborhood prompts and, when any neighbor's object differs from the fact's, their objects."""
    same = [f for f in index.by_object[fact.relation, fact.obj] if f.subject != fact.subject]
    chosen = rng.sample(same, min(len(same), opts.n_neighborhood))
    if len(chosen) < opts.min_neighborhood_same_object:
        others = [f for f in index.by_relation[fact.relation]
                  if f.obj not in (fact.obj, target_new) and f.subject != fact.subject]
        chosen += rng.sample(others, min(len(others), opts.n_neighborhood - len(chosen)))
    templates = relation.templates
    prompts = tuple(_fill(templates[i % len(templates)], f.subject) for i, f in enumerate(chosen))
    objects = tuple(" " + f.obj for f in chosen)
    return prompts, None if all(f.obj == fact.obj for f in chosen) else objects


def _relation_specific(fact: Fact, index: _Index, relations: Mapping[str, Relation],
                       exclude: set[str], opts: BuildOptions) -> tuple[str, ...]:
    """The subject under its other relations, or under its kind's relations when it has no other."""
    own = sorted({f.relation for f in index.by_subject[fact.subject]} - {fact.relation})
    ids = own or sorted(index.kind_relations[fact.kind] - {fact.relation})
    pools = [[_fill(t, fact.subject) for t in relations[r].templates] for r in ids]
    prompts: list[str] = []
    for depth in range(max((len(p) for p in pools), default=0)):  # round-robin over relations
        for pool in pools:
            if depth < len(pool) and pool[depth] not in exclude and pool[depth] not in prompts:
                prompts.append(pool[depth])
    return tuple(prompts[: opts.n_relation_specific])


def _build_record(case_id: int | str, fact: Fact, index: _Index, relations: Mapping[str, Relation],
                 rng: random.Random, opts: BuildOptions) -> Record | None:
    """One record, or None when the relation has no other object to edit towards."""
    relation = relations[fact.relation]
    candidates = [o for o in index.objects(fact.relation) if o != fact.obj]
    if not candidates:
        log.warning("skipping %r / %s: no other object of the relation to edit towards", fact.subject, fact.relation)
        return None
    target_new = rng.choice(candidates)
    prompt = fact.prompt or relation.templates[0]
    paraphrases = tuple(_fill(t, fact.subject) for t in relation.templates if t != prompt)
    neighborhood, neighbor_objects = _neighbors(fact, target_new, index, relation, rng, opts)
    own_prompts = {_fill(t, fact.subject) for t in relation.templates} | {_fill(prompt, fact.subject)}
    generation = opts.generation_templates.get(fact.kind, GENERATION_TEMPLATES)
    return Record(
        case_id, EditRequest(prompt, fact.subject, " " + target_new, " " + fact.obj),
        paraphrase_prompts=paraphrases, neighborhood_prompts=neighborhood,
        relation_specific_prompts=_relation_specific(fact, index, relations, own_prompts, opts),
        generation_prompts=tuple(_fill(t, fact.subject) for t in generation),
        relation_id=fact.relation, neighborhood_targets=neighbor_objects,
    )


def build_records(facts: Sequence[Fact], relations: Mapping[str, Relation] | Sequence[Relation],
                  *, options: BuildOptions | None = None,
                  case_ids: Sequence[int | str] | None = None) -> tuple[Record, ...]:
    """COUNTERFACT_RS records for ``facts`` (case ids 0, 1, ... unless given); a fact whose
    relation has a single object is skipped with a warning."""
    opts = options or BuildOptions()
    if not isinstance(relations, Mapping):
        relations = {r.id: r for r in relations}
    _check_facts(facts, relations)
    index, rng = _Index(facts), random.Random(opts.seed)
    ids = list(case_ids) if case_ids is not None else list(range(len(facts)))
    built = (_build_record(i, f, index, relations, rng, opts) for i, f in zip(ids, facts, strict=True))
    return tuple(r for r in built if r is not None)


# --- the built-in benchmark -------------------------------------------------------------------

def _data(name: str) -> Any:
    return json.loads(resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8"))


#: the forms of the built-in benchmark: statements ("The capital of {} is"), or questions with an
#: answer cue ("Q: What is the capital of {}? A:"), whose last token carries little of the relation
FORMS = ("statement", "question")


def builtin_relations(form: str = "statement") -> dict[str, Relation]:
    """The built-in relations (analyses/evaluation/data/relations.json), their templates as
    statements or, ``form="question"``, as questions."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {list(FORMS)}; got {form!r}")
    data = _data("relations.json")
    key = "templates" if form == "statement" else "questions"
    return {rid: Relation(rid, tuple(r[key]), r.get("name", "")) for rid, r in data["relations"].items()}


def builtin_facts() -> tuple[Fact, ...]:
    """The built-in fact table (analyses/evaluation/data/builtin_facts.json)."""
    return tuple(Fact(r["subject"], r["relation"], r["object"], r["kind"]) for r in _data("builtin_facts.json"))


def builtin_records(limit: int | None = None, seed: int = 0, form: str = "statement") -> tuple[Record, ...]:
    """The built-in COUNTERFACT_RS benchmark: built from all facts, ordered round-robin over
    relations, then cut to ``limit``; ``case_id`` is the fact's index in builtin_facts.json. With
    ``form="question"`` every prompt (rewrite, paraphrases, neighborhood, relation-specific) is
    a question with an answer cue; the facts, targets and neighbors are the same."""
    generation = {k: tuple(v) for k, v in _data("relations.json")["generation_templates"].items()}
    records = build_records(builtin_facts(), builtin_relations(form),
                            options=BuildOptions(seed=seed, generation_templates=generation))
    records = interleave_relations(records)
    return records if limit is None else records[:limit]


def interleave_relations(records: Sequence[Record]) -> tuple[Record, ...]:
    """Round-robin over relations (in order of first appearance), so any prefix mixes them."""
    groups: dict[str | None, list[Record]] = defaultdict(list)
    for r in records:
        groups[r.relation_id].append(r)
    longest = max((len(g) for g in groups.values()), default=0)
    return tuple(g[i] for i in range(longest) for g in groups.values() if i < len(g))

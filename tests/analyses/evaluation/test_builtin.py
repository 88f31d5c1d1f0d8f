import json
from collections import Counter
from importlib import resources

from toplens.analyses.evaluation.builder import builtin_facts, builtin_records, builtin_relations


def test_builtin_benchmark_counts():
    records = builtin_records()
    assert len(records) >= 200
    assert len({r.relation_id for r in records}) >= 12
    for r in records:
        assert len(r.paraphrase_prompts) >= 2, r
        assert len(r.neighborhood_prompts) >= 4, r
        assert len(r.relation_specific_prompts) >= 3, r
        assert r.request.target_new != r.request.target_true
        assert not set(r.relation_specific_prompts) & {r.request.text, *r.paraphrase_prompts}
        assert r.generation_prompts


def test_builtin_facts_are_distinct_and_well_formed():
    raw = json.loads(resources.files("toplens.analyses.evaluation").joinpath("data", "builtin_facts.json").read_text())
    rows = [tuple(sorted(r.items())) for r in raw]
    assert len(rows) == len(set(rows))
    facts = builtin_facts()
    assert len({(f.subject, f.relation) for f in facts}) == len(facts)  # one object per subject and relation
    kinds = {}
    for f in facts:
        assert kinds.setdefault(f.subject, f.kind) == f.kind, f  # a subject has one kind
        assert f.obj == f.obj.strip() and f.obj and f.subject == f.subject.strip()
    relations = builtin_relations()
    assert {f.relation for f in facts} == set(relations)
    assert all(len(r.templates) >= 3 for r in relations.values())
    assert Counter(len(f.obj.split()) for f in facts)[1] / len(facts) > 0.9  # mostly single words


def test_builtin_limit_and_seed():
    first = builtin_records(limit=20)
    assert len(first) == 20 and len({r.relation_id for r in first}) >= 12
    assert [r.case_id for r in first] == [r.case_id for r in builtin_records(limit=20, seed=1)]
    assert [r.request.target_new for r in first] != [r.request.target_new for r in builtin_records(limit=20, seed=1)]

import pytest

from toplens.analyses.evaluation.builder import (BuildOptions, Fact, Relation, build_records, builtin_records,
                                                 interleave_relations)
from toplens.analyses.evaluation.datasets import load_dataset
from toplens.analyses.evaluation.records import DatasetError

RELATIONS = [
    Relation("capital", ("The capital of {} is", "{}'s capital city is", "{} has its capital in")),
    Relation("currency", ("The currency of {} is the", "{} pays with the")),
    Relation("language", ("The language of {} is", "People in {} speak")),
    Relation("instrument", ("{} plays the", "The instrument of {} is the")),
    Relation("genre", ("{} performs", "The genre of {} is")),
]
FACTS = [
    Fact("France", "capital", "Paris", "country"),
    Fact("Italy", "capital", "Rome", "country"),
    Fact("Spain", "capital", "Madrid", "country"),
    Fact("Japan", "capital", "Tokyo", "country"),
    Fact("France", "currency", "euro", "country"),
    Fact("Italy", "currency", "euro", "country"),
    Fact("Spain", "currency", "euro", "country"),
    Fact("Germany", "currency", "euro", "country"),
    Fact("Austria", "currency", "euro", "country"),
    Fact("Japan", "currency", "yen", "country"),
    Fact("Peru", "language", "Spanish", "country"),  # Peru has no other fact
    Fact("Brazil", "language", "Portuguese", "country"),
    Fact("Miles Davis", "instrument", "trumpet", "person"),  # no other fact either
    Fact("Jimi Hendrix", "instrument", "guitar", "person"),
    Fact("B. B. King", "genre", "blues", "person"),
    Fact("Bob Marley", "genre", "reggae", "person"),
]


def build(**kwargs):
    return {(r.request.subject, r.relation_id): r for r in build_records(FACTS, RELATIONS, options=BuildOptions(**kwargs))}


def test_request_paraphrases_and_generation_prompts():
    r = build()["France", "capital"]
    assert r.request.prompt == "The capital of {} is" and r.request.target_true == " Paris"
    assert r.paraphrase_prompts == ("France's capital city is", "France has its capital in")
    assert r.generation_prompts and all("France" in p for p in r.generation_prompts)


@pytest.mark.parametrize("seed", range(5))
def test_target_new_is_another_object_of_the_relation(seed):
    for r in build(seed=seed).values():
        objects = {" " + f.obj for f in FACTS if f.relation == r.relation_id}
        assert r.request.target_new in objects and r.request.target_new != r.request.target_true


def test_seed_changes_targets_and_is_reproducible():
    targets = [tuple(r.request.target_new for r in build(seed=s).values()) for s in range(6)]
    assert len(set(targets)) > 1
    assert targets[0] == tuple(r.request.target_new for r in build(seed=0).values())


def test_neighborhood_uses_subjects_sharing_the_true_object():
    r = build()["France", "currency"]
    subjects = {p.split()[-3] if p.startswith("The") else p.split()[0] for p in r.neighborhood_prompts}
    assert subjects == {"Italy", "Spain", "Germany", "Austria"}
    assert r.neighborhood_targets is None and r.neighborhood_true == (" euro",) * 4


def test_neighborhood_falls_back_to_the_relation_with_each_subjects_object():
    r = build()["France", "capital"]
    assert r.request.target_new in (" Rome", " Madrid", " Tokyo")
    assert len(r.neighborhood_prompts) == 2  # the third other capital is the new target
    assert all(t not in (r.request.target_new, " Paris") for t in r.neighborhood_targets)
    for prompt, target in zip(r.neighborhood_prompts, r.neighborhood_targets):
        subject = {" Rome": "Italy", " Madrid": "Spain", " Tokyo": "Japan"}[target]
        assert subject in prompt


def test_relation_specific_uses_the_subjects_other_relations():
    r = build()["France", "capital"]
    assert set(r.relation_specific_prompts) == {"The currency of France is the", "France pays with the"}


def test_relation_specific_falls_back_to_relations_of_the_same_kind():
    peru = build()["Peru", "language"]
    assert set(peru.relation_specific_prompts) == {
        "The capital of Peru is", "Peru's capital city is", "Peru has its capital in",
        "The currency of Peru is the", "Peru pays with the"}
    miles = build()["Miles Davis", "instrument"]
    assert set(miles.relation_specific_prompts) == {"Miles Davis performs", "The genre of Miles Davis is"}


def test_relation_specific_round_robin_and_cap():
    r = build(n_relation_specific=3)["Peru", "language"]
    assert r.relation_specific_prompts == ("The capital of Peru is", "The currency of Peru is the",
                                           "Peru's capital city is")


def test_unknown_relation_and_duplicate_fact_are_errors():
    with pytest.raises(DatasetError, match="fact 1 .*'relation' 'moon'"):
        build_records([FACTS[0], Fact("X", "moon", "y", "country")], RELATIONS)
    with pytest.raises(DatasetError, match="fact 1 .*repeats fact 0"):
        build_records([FACTS[0], Fact("France", "capital", "Lyon", "country")], RELATIONS)
    with pytest.raises(DatasetError, match="templates"):
        Relation("bad", ("no subject here",))


def test_relation_with_one_object_is_skipped():
    records = build_records([Fact("A", "capital", "X", "country"), Fact("B", "capital", "X", "country")], RELATIONS)
    assert records == ()


def test_interleave_relations_mixes_prefixes():
    records = interleave_relations(build_records(FACTS, RELATIONS))
    assert len({r.relation_id for r in records[:5]}) == 5


def test_the_question_form_asks_the_same_facts_as_questions():
    statements, questions = builtin_records(12), builtin_records(12, form="question")
    assert [r.case_id for r in statements] == [r.case_id for r in questions]
    for s, q in zip(statements, questions):
        assert (q.request.subject, q.request.target_new, q.request.target_true) == \
               (s.request.subject, s.request.target_new, s.request.target_true)
        prompts = (q.request.prompt, *q.paraphrase_prompts, *q.neighborhood_prompts,
                   *(p for p in q.relation_specific_prompts))
        assert all(p.startswith("Q: ") and p.endswith("? A:") for p in prompts)
    assert load_dataset("builtin-questions", limit=3) == questions[:3]
    with pytest.raises(ValueError, match="form.*'quiz'"):
        builtin_records(3, form="quiz")

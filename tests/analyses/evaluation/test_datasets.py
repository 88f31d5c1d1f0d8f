import json

import pytest

from tests.conftest import require_shared_data

from toplens.analyses.evaluation.builder import Fact, Relation, build_records
from toplens.analyses.evaluation.datasets import (COUNTERFACT, COUNTERFACT_RS, KNOWN_FACTS, detect_format, load_records,
                                                  read_counterfact, read_counterfact_rs, save_records)
from toplens.analyses.evaluation.known_facts import read_known_facts
from toplens.analyses.evaluation.records import DatasetError


def rs_record(case_id=7, **changes):
    record = {
        "case_id": case_id,
        "requested_rewrite": {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
                              "relation_id": "P103", "target_new": {"str": "English", "id": "Q1860"},
                              "target_true": {"str": "French", "id": "Q150"}},
        "paraphrase_prompts": ["Danielle Darrieux's mother tongue is"],
        "neighborhood_prompts": ["The mother tongue of Léon Blum is", "Raymond Barre speaks"],
        "attribute_prompts": ["J. R. R. Tolkien is a native speaker of"],
        "generation_prompts": ["Danielle Darrieux's mother tongue is"],
        "relation_specific_prompts": ["Danielle Darrieux works as", "Danielle Darrieux was born in"],
        "reference_texts": ["English is a West Germanic language."],
    }
    record.update(changes)
    return record


def write(tmp_path, data, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_reads_counterfact_rs(tmp_path):
    (r,) = read_counterfact_rs(write(tmp_path, [rs_record()]))
    assert r.case_id == 7 and r.relation_id == "P103"
    assert (r.request.target_new, r.request.target_true) == (" English", " French")
    assert r.request.text == "The mother tongue of Danielle Darrieux is"
    assert r.neighborhood_prompts == ("The mother tongue of Léon Blum is", "Raymond Barre speaks")
    assert r.relation_specific_prompts == ("Danielle Darrieux works as", "Danielle Darrieux was born in")
    assert r.reference_texts == ("English is a West Germanic language.",)
    assert r.neighborhood_true == (" French", " French")


def test_load_detects_formats(tmp_path):
    plain = {k: v for k, v in rs_record().items() if k not in ("relation_specific_prompts", "reference_texts")}
    assert detect_format([plain]) == COUNTERFACT
    assert detect_format([rs_record()]) == COUNTERFACT_RS
    (r,) = load_records(write(tmp_path, [plain]))
    assert r.relation_specific_prompts == () and r.reference_texts is None
    with pytest.raises(DatasetError, match="cannot tell the format"):
        load_records(write(tmp_path, [{"foo": 1}]))
    assert load_records(write(tmp_path, [])) == ()


@pytest.mark.parametrize("changes, field", [
    ({"paraphrase_prompts": "not a list"}, "'paraphrase_prompts'"),
    ({"neighborhood_prompts": ["ok", 3]}, "'neighborhood_prompts' item 1"),
    ({"relation_specific_prompts": None}, "'relation_specific_prompts'"),
    ({"requested_rewrite": {"prompt": "{} speaks", "subject": "X", "target_new": {"str": "French"},
                            "target_true": {"str": "French"}}}, "'requested_rewrite'"),
    ({"requested_rewrite": {"prompt": "no slot", "subject": "X", "target_new": {"str": "a"}}}, "'requested_rewrite'"),
    ({"requested_rewrite": {"prompt": "{} speaks", "subject": "X", "target_new": {"id": "Q1"}}},
     "'requested_rewrite.target_new.str'"),
    ({"case_id": [1]}, "'case_id'"),
])
def test_malformed_record_names_record_and_field(tmp_path, changes, field):
    data = [rs_record(0), {**rs_record(41), **changes}]
    with pytest.raises(DatasetError) as err:
        load_records(write(tmp_path, data))
    message = str(err.value)
    assert "index 1" in message and field in message
    if "case_id" not in changes:
        assert "case_id=41" in message


def test_missing_field_and_non_object_records(tmp_path):
    record = rs_record(3)
    del record["neighborhood_prompts"]
    with pytest.raises(DatasetError, match=r"case_id=3 \(index 1\): missing field 'neighborhood_prompts'"):
        read_counterfact(write(tmp_path, [rs_record(), record]))
    with pytest.raises(DatasetError, match="index 1: expected a JSON object"):
        read_counterfact(write(tmp_path, [rs_record(), "oops"]))
    no_rs = {k: v for k, v in rs_record(5).items() if k != "relation_specific_prompts"}
    with pytest.raises(DatasetError, match="case_id=5 .*'relation_specific_prompts'"):
        read_counterfact_rs(write(tmp_path, [no_rs]))
    with pytest.raises(DatasetError, match="expected a JSON list"):
        read_counterfact(write(tmp_path, {"case_id": 1}))


def test_malformed_known_fact_names_record_and_field(tmp_path):
    good = {"known_id": 0, "subject": "Paris", "attribute": "France", "template": "{} is in",
            "prediction": " France", "prompt": "Paris is in", "relation_id": "P17"}
    bad = {**good, "known_id": 9, "template": "is in"}
    with pytest.raises(DatasetError, match=r"known_id=9 \(index 1\): field 'template'"):
        read_known_facts(write(tmp_path, [good, bad]))
    del bad["subject"]
    with pytest.raises(DatasetError, match="known_id=9 .*missing field 'subject'"):
        load_records(write(tmp_path, [good, bad]))


def test_known_facts_become_records(tmp_path):
    def fact(i, subject, attribute, template, relation="P17", extra=""):
        return {"known_id": i, "subject": subject, "attribute": attribute, "template": template,
                "prediction": "", "prompt": template.format(subject) + extra, "relation_id": relation}
    data = [fact(0, "Paris", "France", "{} is located in the country"), fact(1, "Lyon", "France", "{}, in"),
            fact(2, "Rome", "Italy", "{} is located in the country", extra=" of"),
            fact(3, "Milan", "Italy", "{}, in"), fact(4, "Berlin", "Germany", "{}, in"),
            fact(5, "Paris", "France", "{} is located in the country")]  # a repeat: dropped
    records = load_records(write(tmp_path, data))
    assert [r.case_id for r in records] == [0, 1, 2, 3, 4]
    rome = records[2]
    assert rome.request.prompt == "{} is located in the country of"  # the prompt's " of" is kept
    assert rome.paraphrase_prompts == ("Rome, in",)
    assert records[0].request.prompt == "{} is located in the country of"  # one template, one form


def test_save_then_load_round_trip(tmp_path):
    relations = [Relation("capital", ("The capital of {} is", "{}'s capital is")),
                 Relation("currency", ("The currency of {} is the", "{} pays with the"))]
    facts = [Fact(c, "capital", cap, "country") for c, cap in [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid")]]
    facts += [Fact(c, "currency", cur, "country") for c, cur in [("France", "euro"), ("Japan", "yen")]]
    records = build_records(facts, relations)
    path = tmp_path / "rs.json"
    save_records(records, path)
    assert load_records(path) == records


def test_known_1000_builds():
    path = require_shared_data("known_1000.json")
    records = load_records(path)
    assert detect_format(json.loads(path.read_text())) == KNOWN_FACTS
    assert len(records) > 1150 and len({r.relation_id for r in records}) >= 32
    assert sum(len(r.paraphrase_prompts) >= 1 for r in records) / len(records) > 0.95
    assert all(r.request.target_new != r.request.target_true for r in records)
    assert all(r.neighborhood_prompts and r.relation_specific_prompts for r in records)

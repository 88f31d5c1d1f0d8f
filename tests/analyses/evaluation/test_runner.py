"""run_eval's bookkeeping: resume only into the same records, and bad records skipped, not fatal."""

import json
from dataclasses import dataclass

import pytest

from toplens import EditRequest, RequestError
from toplens.core import precision
from toplens.analyses.evaluation.cases import CASES_FILE, case_from_dict, read_cases
from toplens.analyses.evaluation.records import Record
from toplens.analyses.evaluation.runner import SKIPPED_FILE, SUMMARY_FILE, record_digest, run_eval
from tests.analyses.evaluation.test_evaluate import FAST, ShiftHparams, _record, shift  # noqa: F401 (fixture)

HP = {"shift": ShiftHparams()}


def _run(model, records, out, **kw):
    return run_eval(model, records, ["shift"], out, hparams=HP, generation_tokens=0, progress=False, **kw)


def test_the_record_fingerprint_follows_the_content():
    a, b = _record(0), _record(0, "guitar")
    assert record_digest(a) == record_digest(_record(0)) and record_digest(a) != record_digest(b)


def test_resuming_into_other_data_with_the_same_case_ids_is_refused(tiny_hooked, shift, tmp_path):
    _run(tiny_hooked, [_record(0), _record(1)], tmp_path)
    other = [_record(0, "guitar"), _record(1)]
    with pytest.raises(ValueError, match=r"case 0 of 'shift' evaluated on other record content.*another output"):
        _run(tiny_hooked, other, tmp_path)
    assert shift.calls == 2 and len(read_cases(tmp_path / CASES_FILE)) == 2


def test_lines_without_a_fingerprint_are_not_trusted(tiny_hooked, shift, tmp_path):
    _run(tiny_hooked, [_record(0)], tmp_path)
    path = tmp_path / CASES_FILE
    (line,) = read_cases(path)
    del line["record"]
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(ValueError, match="fingerprint None"):
        _run(tiny_hooked, [_record(0)], tmp_path)


def test_a_resume_keeps_lines_written_before_efficacy_at_1(tiny_hooked, shift, tmp_path, monkeypatch):
    """Old lines (no efficacy_at_1) load with None and are not re-edited; the mean is over new lines."""
    _run(tiny_hooked, [_record(0), _record(1, "guitar")], tmp_path)
    path = tmp_path / CASES_FILE
    old, new = read_cases(path)
    for stage in ("pre", "post"):
        del old[stage]["efficacy_at_1"]
    path.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    assert case_from_dict(old).efficacy_at_1 is None and case_from_dict(old, "pre").efficacy_at_1 is None
    monkeypatch.setattr(shift, "compute", lambda *a: pytest.fail("a finished case was edited again"))
    again = _run(tiny_hooked, [_record(0), _record(1, "guitar")], tmp_path)
    assert [c.efficacy_at_1 for c in again.cases["shift"]][0] is None
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())["shift"]
    assert summary["n"] == 2 and summary["efficacy_at_1"] == 100 * new["post"]["efficacy_at_1"]["rate"]
    assert summary["pre"]["efficacy_at_1"] == 100 * new["pre"]["efficacy_at_1"]["rate"]
    only_old = _run(tiny_hooked, [_record(0)], tmp_path)
    assert only_old.to_json()["shift"]["efficacy_at_1"] is None and only_old.summaries["shift"].post.score is not None


@dataclass(frozen=True)
class LaterHparams(ShiftHparams):
    """ShiftHparams after a release that added a field."""

    strength: float = 1.0


def test_a_folder_from_before_a_new_field_resumes_when_the_field_holds_its_default(tiny_hooked, shift, tmp_path,
                                                                                   monkeypatch):
    _run(tiny_hooked, [_record(0)], tmp_path)
    path = tmp_path / CASES_FILE
    old = read_cases(path)[0]["hparams"]
    assert "strength" not in old
    later = dict(hparams={"shift": LaterHparams()}, generation_tokens=0, progress=False)
    with pytest.raises(ValueError, match=r"case 0 of 'shift' run with other hparams"):
        run_eval(tiny_hooked, [_record(0)], ["shift"], tmp_path, **{**later, "hparams": {"shift": LaterHparams(2.0)}})
    monkeypatch.setattr(shift, "compute", lambda *a: pytest.fail("a finished case was edited again"))
    run_eval(tiny_hooked, [_record(0)], ["shift"], tmp_path, **later)
    assert [line["hparams"] for line in read_cases(path)] == [{**old, "strength": 1.0}]  # written again, with it
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())["shift"]
    assert summary["n"] == 1 and summary["hparams"] == {**old, "strength": 1.0}


def test_auto_precision_is_recorded_as_run_and_a_resume_on_another_device_is_refused(tiny_hooked, shift, tmp_path,
                                                                                     monkeypatch):
    kw = dict(hparams={"shift": ShiftHparams(precision="auto")}, generation_tokens=0, progress=False)
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: False)
    run_eval(tiny_hooked, [_record(0)], ["shift"], tmp_path, **kw)
    line = read_cases(tmp_path / CASES_FILE)[0]
    assert line["hparams"]["precision"] == "auto" and line["as_run"] == {"precision": "float32"}
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: True)  # the same folder on a bfloat16 device
    with pytest.raises(ValueError, match=r"case 0 of 'shift' run in precision 'float32'.*here it runs in 'bfloat16'"):
        run_eval(tiny_hooked, [_record(0), _record(1)], ["shift"], tmp_path, **kw)


def _long_record(case_id, n_words=400):
    long = "word " * n_words
    return Record(case_id, EditRequest(long + "Miles Davis plays the {}", "trumpet", " Paris", " France"),
                  paraphrase_prompts=("The trumpet",), neighborhood_prompts=("Miles Davis plays the guitar",))


def test_a_record_that_cannot_be_evaluated_is_skipped_and_listed(tiny_model, tmp_path, caplog):
    records = [_record(0), _long_record("too-long"), _record(2, "guitar")]
    result = run_eval(tiny_model, records, ["rome"], tmp_path, hparams={"rome": FAST}, generation_tokens=0,
                      progress=False)
    assert [c.case_id for c in result.cases["rome"]] == [0, 2]
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())["rome"]
    assert summary["n"] == 2
    (skip,) = summary["skipped"]
    assert skip["case_id"] == "too-long" and skip["index"] == 1 and "context" in skip["reason"]
    assert "case 'too-long' (record 1)" in caplog.text
    assert [line["case_id"] for line in read_cases(tmp_path / SKIPPED_FILE)] == ["too-long"]


def _picky(monkeypatch):
    """Make the shift editor refuse the subject "guitar" as a record error; returns (the refusing
    computation, the original one)."""
    from tests.analyses.evaluation import test_evaluate as helpers

    original = helpers._Shift.compute

    def picky(model, request, hparams):
        if request.subject == "guitar":
            raise RequestError("EditRequest.subject 'guitar' tokens merge with the text around it")
        return original(model, request, hparams)

    monkeypatch.setattr(helpers._Shift, "compute", picky)
    return helpers, picky, original


def test_a_resume_does_not_retry_a_skipped_record_and_strict_stops(tiny_hooked, shift, tmp_path, monkeypatch):
    helpers, picky, original = _picky(monkeypatch)
    records = [_record(0), _record(1, "guitar"), _record(2, "drums")]
    first = _run(tiny_hooked, records, tmp_path)
    assert [s.case_id for s in first.skipped] == [1] and [c.case_id for c in first.cases["shift"]] == [0, 2]
    calls = []
    monkeypatch.setattr(helpers._Shift, "compute", lambda *a: calls.append(a) or original(*a))
    again = _run(tiny_hooked, records, tmp_path)
    assert calls == [] and again.to_json() == first.to_json()
    with pytest.raises(ValueError, match=r"case 1 \(record 1\): EditRequest.subject 'guitar'"):
        monkeypatch.setattr(helpers._Shift, "compute", picky)
        _run(tiny_hooked, records, tmp_path / "strict", strict=True)


def test_a_changed_skipped_record_is_tried_again_and_strict_refuses_an_old_skip(tiny_hooked, shift, tmp_path,
                                                                                monkeypatch):
    _picky(monkeypatch)
    _run(tiny_hooked, [_record(0), _record(1, "guitar")], tmp_path)
    with pytest.raises(ValueError, match="case 1 was skipped by an earlier run"):
        _run(tiny_hooked, [_record(0), _record(1, "guitar")], tmp_path, strict=True)
    fixed = _run(tiny_hooked, [_record(0), _record(1, "drums")], tmp_path / "other")  # fresh folder: fine
    assert not fixed.skipped
    again = _run(tiny_hooked, [_record(0), _record(1, "bass")], tmp_path)  # the record changed: retried
    assert not again.skipped and [c.case_id for c in again.cases["shift"]] == [0, 1]


def test_an_error_of_the_settings_stops_the_run_before_any_record(tiny_hooked, tmp_path):
    with pytest.raises(ValueError, match=r"RomeHparams.layer=99 is outside \[0, 4\)"):
        run_eval(tiny_hooked, [_record(0)], ["rome"], tmp_path, hparams={"rome": FAST.replace(layer=99)},
                 generation_tokens=0, progress=False)
    assert not (tmp_path / CASES_FILE).exists() or read_cases(tmp_path / CASES_FILE) == []


def test_summary_json_has_a_bootstrap_interval_that_holds_each_rate(tiny_hooked, shift, tmp_path):
    _run(tiny_hooked, [_record(0), _record(1, "guitar"), _record(2)], tmp_path)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())["shift"]
    intervals = summary["intervals"]
    assert intervals["n"] == 3 and intervals["level"] == 0.95 and intervals["draws"] == 2000
    for name in ("efficacy", "generalization", "s_specificity", "r_specificity", "efficacy_at_1", "score"):
        low, high = intervals[name]
        assert low - 0.01 <= summary[name] <= high + 0.01, name


def test_a_batched_run_gives_the_serial_runs_outcomes_skips_and_generations(tiny_model, tmp_path):
    """--batch-size 3 against 1: the same cases and skips (a chunk holding the too-long record goes
    one at a time), per-prompt NLLs within float order, the same outcomes off ties, the same texts."""
    from tests.analyses.evaluation.test_batched import _assert_same
    records = [_record(0), _long_record("too-long"), _record(2, "guitar"), _record(3, "drums"), _record(4, "harp")]
    kw = dict(hparams={"rome": FAST}, generation_tokens=3, progress=False)
    serial = run_eval(tiny_model, records, ["rome"], tmp_path / "serial", **kw)
    batched = run_eval(tiny_model, records, ["rome"], tmp_path / "batched", batch_size=3, **kw)
    assert [s.case_id for s in batched.skipped] == [s.case_id for s in serial.skipped] == ["too-long"]
    assert [c.case_id for c in batched.cases["rome"]] == [c.case_id for c in serial.cases["rome"]] == [0, 2, 3, 4]
    for b, s in zip(batched.cases["rome"], serial.cases["rome"], strict=True):
        _assert_same(b, s)
        assert b.fluency == s.fluency
    texts = {(x["case_id"], x["method"]): x["generations"] for x in read_cases(tmp_path / "serial" / CASES_FILE)}
    assert {(x["case_id"], x["method"]): x["generations"] for x in read_cases(tmp_path / "batched" / CASES_FILE)} == texts


def test_a_batch_interrupted_mid_way_resumes_with_nothing_lost_or_repeated(tiny_hooked, shift, tmp_path, monkeypatch):
    helpers, _, original = _picky(monkeypatch)
    records = [_record(i, s) for i, s in enumerate(("trumpet", "drums", "harp", "flute", "organ"))]
    calls = []

    def interrupted(*a):
        calls.append(a)
        if len(calls) == 4:  # the second batch's first edit
            raise KeyboardInterrupt
        return original(*a)

    monkeypatch.setattr(helpers._Shift, "compute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_hooked, records, tmp_path, batch_size=3)
    assert [line["case_id"] for line in read_cases(tmp_path / CASES_FILE)] == [0, 1, 2]
    monkeypatch.setattr(helpers._Shift, "compute", lambda *a: calls.append(a) or original(*a))
    resumed = _run(tiny_hooked, records, tmp_path, batch_size=3)
    assert len(calls) == 4 + 2  # only the two cases not yet written
    assert [line["case_id"] for line in read_cases(tmp_path / CASES_FILE)] == [0, 1, 2, 3, 4]
    unbroken = _run(tiny_hooked, records, tmp_path / "unbroken", batch_size=3).to_json()
    timeless = lambda summary: {k: v for k, v in summary["shift"].items() if k != "seconds_per_edit"}  # noqa: E731
    assert timeless(resumed.to_json()) == timeless(unbroken)

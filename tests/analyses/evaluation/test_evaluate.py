import contextlib
import dataclasses
import json

import pytest
import torch

from tests.conftest import param_hash

from toplens.analyses.evaluation import evaluate as ev
from toplens.analyses.evaluation.cases import CASES_FILE, case_from_dict, read_cases
from toplens.analyses.evaluation.records import Record
from toplens.analyses.evaluation.runner import SUMMARY_FILE, EvalResult, run_eval
from toplens import EditRequest, LayerDelta, WeightEdit, apply_edit, as_adapter
from toplens.core.positions import target_ids
from toplens.core.scoring import target_logprobs
from toplens.core.hparams import Hparams
from toplens.editors.base import Editor
from toplens import editors
from toplens.editors.rome import RomeHparams

# Tiny random models attend nearly uniformly: the subject goes last in the prompt (see test_rome).
FAST = RomeHparams(layer=1, v_num_grad_steps=5, mom2_adjustment=False, context_lengths=((2, 3),))


def _record(case_id=0, subject="trumpet", references=None) -> Record:
    return Record(
        case_id, EditRequest("Miles Davis plays the {}", subject, " Paris", " France"),
        paraphrase_prompts=(f"Jimi Hendrix plays the {subject}", f"The {subject}"),
        neighborhood_prompts=("Miles Davis plays the guitar", "Jimi Hendrix plays the guitar"),
        relation_specific_prompts=(f"The Eiffel Tower is located in {subject}", f"Toyota is {subject}"),
        generation_prompts=(f"Miles Davis plays the {subject}", f"{subject} is"),
        reference_texts=references, relation_id="P1303",
    )


class _Shift:
    """A stand-in editor's computation: adds a fixed ΔW_out."""

    calls = 0

    @classmethod
    def compute(cls, model, request, hparams):
        cls.calls += 1
        adapter = as_adapter(model)
        u = torch.full((adapter.d_mlp,), 0.05, dtype=adapter.dtype)
        v = torch.ones(adapter.d_model, dtype=adapter.dtype)  # ΔW = u ⊗ v = 0.05 everywhere
        return WeightEdit("shift", (request,), (LayerDelta.rank_one(1, u, v),), {})


# registered like any editor; its computation is looked up on _Shift at call time, so a test can
# replace _Shift.compute
@dataclasses.dataclass(frozen=True)
class ShiftHparams(Hparams):
    """No settings: the shift is fixed, at layer 1."""

    @property
    def edit_layers(self) -> tuple[int, ...]:
        return (1,)


SHIFT = Editor("shift", ShiftHparams, lambda adapter, request, hp, **options: _Shift.compute(adapter, request, hp),
               lambda hp: ())


@pytest.fixture
def shift(monkeypatch):
    _Shift.calls = 0
    monkeypatch.setitem(editors._EDITORS, "shift", SHIFT)
    return _Shift


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
def test_evaluate_record_edits_then_restores_weights_bit_exactly(request, name):
    model = request.getfixturevalue(name)
    weights = param_hash(model)
    record = _record()
    case = ev.evaluate_case(model, record, "rome", FAST, generation_tokens=4)
    assert param_hash(model) == weights
    pre, post = case.before.efficacy.outcomes[0], case.result.efficacy.outcomes[0]
    assert post.nll_wanted < pre.nll_wanted - 0.5  # the edit took effect while applied
    assert len(case.result.generalization.outcomes) == 2 and len(case.result.s_specificity.outcomes) == 2
    tokens = [t for t in case.before.tokens if t is not None]
    assert len(case.result.r_specificity.outcomes) == len(tokens) and all(0 < t.prob <= 1 for t in tokens)
    assert len(case.generations) == 2 and case.result.fluency is not None
    assert case.result.consistency is None  # no reference texts
    # the metrics after reverting equal the ones measured before
    again = ev.measure(model, record, case.before.tokens)
    assert [o.nll_wanted for o in again.efficacy.outcomes] == pytest.approx([pre.nll_wanted], abs=1e-5)


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
def test_efficacy_at_1_is_whether_o_stars_first_token_is_the_top_next_token(request, name, shift):
    model = request.getfixturevalue(name)
    adapter, record = as_adapter(model), _record()
    req = record.request
    first = target_ids(adapter, req.text, req.target_new)[0]
    for edit in (None, _Shift.compute(model, req, None)):  # before and under an edit
        with apply_edit(model, edit) if edit else contextlib.nullcontext():
            at_1 = ev.measure(model, record).efficacy_at_1.outcomes[0]
            probs = adapter.next_token_probs(req.text)  # a forward of its own
            assert at_1.success == (int(probs.argmax()) == first)
            assert at_1.nll_wanted == pytest.approx(-float(probs[first].log()), abs=1e-4)
            assert at_1.nll_rival == pytest.approx(-float(probs[torch.arange(len(probs)) != first].max().log()),
                                                   abs=1e-4)
            # the same token and position as Efficacy's teacher-forced first step
            own = target_logprobs(model, [req.text], [req.target_new])[0][0]
            assert at_1.nll_wanted == pytest.approx(-float(own), abs=1e-4)


def test_weights_restored_when_measuring_fails(tiny_hooked, shift, monkeypatch):
    weights = param_hash(tiny_hooked)

    def broken(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr(ev, "generate", broken)
    with pytest.raises(RuntimeError, match="generation failed"):
        ev.evaluate_record(tiny_hooked, _record(), "shift", None)
    assert param_hash(tiny_hooked) == weights


def test_consistency_only_with_reference_texts_and_generation_optional(tiny_hooked, shift):
    refs = ("Miles Davis plays the trumpet in Paris, the capital of France.",)
    with_refs = ev.evaluate_record(tiny_hooked, _record(references=refs), "shift", None, generation_tokens=5)
    assert 0.0 <= with_refs.consistency <= 1.0 and with_refs.fluency > 0
    off = ev.evaluate_record(tiny_hooked, _record(references=refs), "shift", None, generation_tokens=0)
    assert off.fluency is None and off.consistency is None


def test_generation_is_seeded(tiny_hooked):
    prompts = ["Miles Davis plays the trumpet", "Paris is"]
    first = ev.generate(tiny_hooked, prompts, n_tokens=6, seed=3)
    assert first == ev.generate(tiny_hooked, prompts, n_tokens=6, seed=3)
    assert all(text.startswith(p) for text, p in zip(first, prompts))
    greedy = ev.generate(tiny_hooked, prompts, n_tokens=6, top_k=1, seed=0)
    assert greedy == ev.generate(tiny_hooked, prompts, n_tokens=6, top_k=1, seed=1)


def test_run_eval_resumes_from_cases_jsonl(tiny_hooked, shift, tmp_path, monkeypatch):
    records = [_record(0), _record(1, "guitar")]
    first = run_eval(tiny_hooked, records, ["shift"], tmp_path, hparams={"shift": ShiftHparams()}, generation_tokens=0,
                     progress=False)
    assert shift.calls == 2 and len(read_cases(tmp_path / CASES_FILE)) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("a finished case was edited again")

    monkeypatch.setattr(shift, "compute", refuse)
    again = run_eval(tiny_hooked, records, ["shift"], tmp_path, hparams={"shift": ShiftHparams()}, generation_tokens=0,
                     progress=False)
    assert again == first and len(read_cases(tmp_path / CASES_FILE)) == 2

    monkeypatch.undo()
    monkeypatch.setitem(editors._EDITORS, "shift", SHIFT)
    run_eval(tiny_hooked, records + [_record("x", "Paris")], ["shift"], tmp_path, hparams={"shift": ShiftHparams()},
             generation_tokens=0, progress=False)
    lines = read_cases(tmp_path / CASES_FILE)
    assert shift.calls == 3 and [line["case_id"] for line in lines] == [0, 1, "x"]


def test_resume_drops_a_truncated_line_and_refuses_other_hparams(tiny_hooked, shift, tmp_path):
    records = [_record(0), _record(1, "guitar")]
    run_eval(tiny_hooked, records, ["shift"], tmp_path, hparams={"shift": ShiftHparams()}, generation_tokens=0, progress=False)
    path = tmp_path / CASES_FILE
    text = path.read_text()
    path.write_text(text[: text.rindex("{") + 20])  # the second line cut mid-write
    run_eval(tiny_hooked, records, ["shift"], tmp_path, hparams={"shift": ShiftHparams()}, generation_tokens=0, progress=False)
    assert [line["case_id"] for line in read_cases(path)] == [0, 1] and shift.calls == 3
    with pytest.raises(ValueError, match="another output folder"):
        run_eval(tiny_hooked, records, ["shift"], tmp_path, hparams={"shift": FAST.replace(layer=2)},
                 generation_tokens=0, progress=False)


def test_summary_json_has_every_key(tiny_hooked, shift, tmp_path):
    result = run_eval(tiny_hooked, [_record(0), _record(1, "guitar")], ["shift"], tmp_path,
                      hparams={"shift": ShiftHparams()}, generation_tokens=4, progress=False)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert isinstance(result, EvalResult) and result.to_json() == summary and result.out_dir == tmp_path
    assert [c.case_id for c in result.cases["shift"]] == [0, 1] and result.summaries["shift"].post.n_cases == 2
    keys = {"n", "efficacy", "generalization", "s_specificity", "r_specificity", "fluency", "consistency",
            "score", "efficacy_magnitude", "generalization_magnitude", "s_specificity_magnitude",
            "r_specificity_magnitude", "pre", "seconds_per_edit", "model", "hparams", "efficacy_at_1"}
    s = summary["shift"]
    assert keys <= set(s) and s["n"] == 2
    assert s["consistency"] is None and s["fluency"] > 0
    assert all(0 <= s[k] <= 100 for k in ("efficacy", "generalization", "s_specificity", "r_specificity"))
    line = read_cases(tmp_path / CASES_FILE)[0]
    assert {"case_id", "method", "model", "hparams", "pre", "post", "flipped", "generations"} <= set(line)
    assert line["hparams"] == ShiftHparams().to_dict()
    at_1 = [c.efficacy_at_1.rate for c in result.cases["shift"]]
    assert s["efficacy_at_1"] == pytest.approx(100 * sum(at_1) / 2) and s["pre"]["efficacy_at_1"] is not None


def test_efficacy_at_1_round_trips_through_cases_jsonl(tiny_hooked, shift, tmp_path):
    result = run_eval(tiny_hooked, [_record(0), _record(1, "guitar")], ["shift"], tmp_path,
                      hparams={"shift": ShiftHparams()}, generation_tokens=0, progress=False)
    lines = read_cases(tmp_path / CASES_FILE)
    assert [case_from_dict(line) for line in lines] == list(result.cases["shift"])
    for line, case in zip(lines, result.cases["shift"]):
        assert case.efficacy_at_1 is not None and line["post"]["efficacy_at_1"]["rate"] == case.efficacy_at_1.rate
        pre = case_from_dict(line, "pre").efficacy_at_1
        assert pre is not None and pre != case.efficacy_at_1  # measured before the edit, not a copy of after


def test_unknown_method_is_refused_before_anything_runs(tiny_hooked, tmp_path):
    with pytest.raises(ValueError, match="'nope'"):
        run_eval(tiny_hooked, [_record()], ["nope"], tmp_path, progress=False)
    assert not (tmp_path / CASES_FILE).exists()

import json

import pytest
import torch

from toplens.analyses import evaluate as ev
from toplens.analyses.cli import main
from toplens.analyses.records import Record
from toplens.analyses.runner import CASES_FILE, SUMMARY_FILE, read_cases, run_eval
from toplens import EditRequest, LayerDelta, WeightEdit, as_adapter
from toplens import editors
from toplens.editors.rome import RomeHparams

# Tiny random models attend nearly uniformly: the subject goes last in the prompt (see test_rome).
FAST = RomeHparams(layer=1, v_num_grad_steps=5, mom2_adjustment=False, context_lengths=((2, 3),))
FAST_JSON = json.dumps({"rome": {"layer": 1, "v_num_grad_steps": 5, "mom2_adjustment": False,
                                 "context_lengths": [[2, 3]]}})


def _record(case_id=0, subject="trumpet", references=None) -> Record:
    return Record(
        case_id, EditRequest("Miles Davis plays the {}", subject, " Paris", " France"),
        paraphrase_prompts=(f"Jimi Hendrix plays the {subject}", f"The {subject}"),
        neighborhood_prompts=("Miles Davis plays the guitar", "Jimi Hendrix plays the guitar"),
        relation_specific_prompts=(f"The Eiffel Tower is located in {subject}", f"Toyota is {subject}"),
        generation_prompts=(f"Miles Davis plays the {subject}", f"{subject} is"),
        reference_texts=references, relation_id="P1303",
    )


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model, saved) -> bool:
    return all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


class _Shift:
    """A stand-in editor (any module-like object with ``compute`` works): adds a fixed ΔW_out."""

    calls = 0

    @classmethod
    def compute(cls, model, request, hparams):
        cls.calls += 1
        adapter = as_adapter(model)
        delta = torch.full((adapter.d_mlp, adapter.d_model), 0.05, dtype=adapter.dtype)
        return WeightEdit("shift", (request,), (LayerDelta(1, delta),), {})


@pytest.fixture
def shift(monkeypatch):
    _Shift.calls = 0
    monkeypatch.setitem(editors._EDITORS, "shift", _Shift)
    return _Shift


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
def test_evaluate_record_edits_then_restores_weights_bit_exactly(request, name):
    model = request.getfixturevalue(name)
    saved = _weights(model)
    record = _record()
    case = ev.evaluate_case(model, record, "rome", FAST, generation_tokens=4)
    assert _same(model, saved)
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


def test_weights_restored_when_measuring_fails(tiny_hooked, shift, monkeypatch):
    saved = _weights(tiny_hooked)

    def broken(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr(ev, "generate", broken)
    with pytest.raises(RuntimeError, match="generation failed"):
        ev.evaluate_record(tiny_hooked, _record(), "shift", None)
    assert _same(tiny_hooked, saved)


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
    first = run_eval(tiny_hooked, records, ["shift"], tmp_path, hparams={"shift": FAST}, generation_tokens=0,
                     progress=False)
    assert shift.calls == 2 and len(read_cases(tmp_path / CASES_FILE)) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("a finished case was edited again")

    monkeypatch.setattr(shift, "compute", refuse)
    again = run_eval(tiny_hooked, records, ["shift"], tmp_path, hparams={"shift": FAST}, generation_tokens=0,
                     progress=False)
    assert again == first and len(read_cases(tmp_path / CASES_FILE)) == 2

    monkeypatch.undo()
    monkeypatch.setitem(editors._EDITORS, "shift", shift)
    run_eval(tiny_hooked, records + [_record("x", "Paris")], ["shift"], tmp_path, hparams={"shift": FAST},
             generation_tokens=0, progress=False)
    lines = read_cases(tmp_path / CASES_FILE)
    assert shift.calls == 3 and [line["case_id"] for line in lines] == [0, 1, "x"]


def test_resume_drops_a_truncated_line_and_refuses_other_hparams(tiny_hooked, shift, tmp_path):
    records = [_record(0), _record(1, "guitar")]
    run_eval(tiny_hooked, records, ["shift"], tmp_path, hparams={"shift": FAST}, generation_tokens=0, progress=False)
    path = tmp_path / CASES_FILE
    text = path.read_text()
    path.write_text(text[: text.rindex("{") + 20])  # the second line cut mid-write
    run_eval(tiny_hooked, records, ["shift"], tmp_path, hparams={"shift": FAST}, generation_tokens=0, progress=False)
    assert [line["case_id"] for line in read_cases(path)] == [0, 1] and shift.calls == 3
    with pytest.raises(ValueError, match="another output folder"):
        run_eval(tiny_hooked, records, ["shift"], tmp_path, hparams={"shift": FAST.replace(layer=2)},
                 generation_tokens=0, progress=False)


def test_summary_json_has_every_key(tiny_hooked, shift, tmp_path):
    run_eval(tiny_hooked, [_record(0), _record(1, "guitar")], ["shift"], tmp_path, hparams={"shift": FAST},
             generation_tokens=4, progress=False)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    keys = {"n", "efficacy", "generalization", "s_specificity", "r_specificity", "fluency", "consistency",
            "score", "efficacy_magnitude", "generalization_magnitude", "s_specificity_magnitude",
            "r_specificity_magnitude", "pre", "seconds_per_edit", "model", "hparams"}
    s = summary["shift"]
    assert keys <= set(s) and s["n"] == 2
    assert s["consistency"] is None and s["fluency"] > 0
    assert all(0 <= s[k] <= 100 for k in ("efficacy", "generalization", "s_specificity", "r_specificity"))
    line = read_cases(tmp_path / CASES_FILE)[0]
    assert {"case_id", "method", "model", "hparams", "pre", "post", "flipped", "generations"} <= set(line)
    assert line["hparams"]["layer"] == 1


def test_unknown_method_is_refused_before_anything_runs(tiny_hooked, tmp_path):
    with pytest.raises(ValueError, match="'nope'"):
        run_eval(tiny_hooked, [_record()], ["nope"], tmp_path, progress=False)
    assert not (tmp_path / CASES_FILE).exists()


def _rs_file(tmp_path):
    def raw(case_id, subject, refs=None):
        out = {"case_id": case_id,
               "requested_rewrite": {"prompt": "Miles Davis plays the {}", "subject": subject, "relation_id": "P1303",
                                     "target_new": {"str": "Paris"}, "target_true": {"str": "France"}},
               "paraphrase_prompts": [f"Jimi Hendrix plays the {subject}"],
               "neighborhood_prompts": ["Miles Davis plays the guitar"],
               "relation_specific_prompts": [f"Toyota is {subject}", f"The Eiffel Tower is {subject}"],
               "generation_prompts": [f"{subject} is"]}
        if refs:
            out["reference_texts"] = refs
        return out

    path = tmp_path / "rs.json"
    path.write_text(json.dumps([raw(7, "trumpet", ["Paris is the capital of France."]), raw(8, "guitar")]))
    return path


def test_cli_reads_counterfact_rs_and_resumes(tiny_hooked, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("toplens.analyses.eval_cli.load_model", lambda name, backend: tiny_hooked)
    out = tmp_path / "out"
    argv = ["eval", "--methods", "rome", "--data", str(_rs_file(tmp_path)), "--out", str(out),
            "--hparams", FAST_JSON, "--generation-tokens", "4"]
    assert main(argv + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rome"]["n"] == 2 and summary["rome"]["consistency"] is not None
    lines = read_cases(out / CASES_FILE)
    assert [(line["case_id"], line["method"]) for line in lines] == [(7, "rome"), (8, "rome")]
    assert lines[0]["consistency"] is not None and lines[1]["consistency"] is None

    monkeypatch.setattr(editors.rome, "compute", lambda *a: pytest.fail("a finished case was edited again"))
    assert main(argv) == 0 and len(read_cases(out / CASES_FILE)) == 2
    table = capsys.readouterr().out
    assert "R-Spec" in table and table.splitlines()[1].startswith("rome")
    assert main(argv + ["--no-generation"]) == 2
    assert "another output folder" in capsys.readouterr().err


def test_cli_names_an_unknown_method(tmp_path, monkeypatch, capsys):
    def no_model(*args):
        raise AssertionError("the model should not be loaded")

    monkeypatch.setattr("toplens.analyses.eval_cli.load_model", no_model)
    assert main(["eval", "--methods", "rome,bogus", "--out", str(tmp_path)]) == 2
    assert "'bogus'" in capsys.readouterr().err

"""run_sequential: the edits accumulate on one model, the curve is measured at the checkpoints,
the model ends bit-identical, and an interrupted run resumes to the same curve as an unbroken one."""

import json
from dataclasses import replace

import pytest

from toplens import EditRequest, editors
from toplens.analyses.evaluation import sequential as seq
from toplens.analyses.evaluation.evaluate import next_token_logprobs
from toplens.analyses.evaluation.records import Record
from toplens.editors.memit import MemitHparams
from toplens.editors.rome import RomeHparams
from tests.conftest import param_hash

ROME = RomeHparams(layer=1, v_num_grad_steps=4, mom2_adjustment=False, context_lengths=((1, 3),))
SUBJECTS = ("trumpet", "guitar", "piano", "violin")


def _record(case_id, subject, target_true=" France") -> Record:
    return Record(case_id, EditRequest("Miles Davis plays the {}", subject, " Paris", target_true),
                  paraphrase_prompts=(f"Jimi Hendrix plays the {subject}",),
                  neighborhood_prompts=("Miles Davis plays the guitar",),
                  relation_specific_prompts=(f"The Eiffel Tower is in {subject}",),
                  generation_prompts=(f"{subject} is",), relation_id="P1303")


def _held_out(model):
    """Records the tiny model 'knows': their true object is its own top next token."""
    out = []
    for i, subject in enumerate(("drum", "flute", "harp")):
        prompt = f"Miles Davis plays the {subject}"
        top = int(next_token_logprobs(model, [prompt])[0].argmax())
        out.append(_record(100 + i, subject, model.tokenizer.decode([top])))
    return out


def _run(model, out, **kw):
    records = [_record(i, s) for i, s in enumerate(SUBJECTS)]
    options = dict(hparams=ROME, held_out=_held_out(model), checkpoints=(1, 2, 4), generation_tokens=3,
                   retention_facts=3, progress=False)
    return seq.run_sequential(model, records, "rome", out, **{**options, **kw})


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
def test_a_run_measures_each_checkpoint_and_leaves_the_weights_bit_identical(request, name, tmp_path):
    model = request.getfixturevalue(name)
    weights = param_hash(model)
    result = _run(model, tmp_path)
    assert param_hash(model) == weights
    assert [p.edits for p in result.points] == [1, 2, 4] and result.label == "rome"
    assert result.retention_facts >= 1 and all(0 <= p.retention <= 100 for p in result.points)
    assert all(p.fluency is not None and p.fluency > 0 for p in result.points) and result.fluency_before > 0
    assert all(0 <= p.efficacy <= 100 and p.seconds > 0 for p in result.points)
    assert result.points[0].seconds < result.points[-1].seconds
    assert len((tmp_path / "edits.jsonl").read_text().splitlines()) == 4
    assert len(list((tmp_path / "edits").glob("*.safetensors"))) == 4
    curve = [json.loads(x) for x in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert curve == [p.to_json() for p in result.points]


def test_an_interrupted_run_resumes_to_the_unbroken_curve(tiny_hooked, tmp_path, monkeypatch):
    weights = param_hash(tiny_hooked)
    unbroken = _run(tiny_hooked, tmp_path / "a")
    real = editors.get_editor("rome")
    original = type(real).compute
    calls = []

    def compute(self, model, requests, hparams=None, **options):
        calls.append(requests)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, model, requests, hparams, **options)

    monkeypatch.setattr(type(real), "compute", compute)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_hooked, tmp_path / "b")
    assert param_hash(tiny_hooked) == weights and len(calls) == 3
    assert [json.loads(x)["edits"] for x in (tmp_path / "b" / "curve.jsonl").read_text().splitlines()] == [1, 2]
    resumed = _run(tiny_hooked, tmp_path / "b")
    assert len(calls) == 5  # only the two edits not yet made
    assert param_hash(tiny_hooked) == weights
    assert [p.edits for p in resumed.points] == [1, 2, 4]
    for a, b in zip(unbroken.points, resumed.points, strict=True):
        assert replace(a, seconds=0.0) == replace(b, seconds=0.0)


def test_bad_settings_are_refused_before_any_edit(tiny_hooked, tmp_path, monkeypatch):
    monkeypatch.setattr(type(editors.get_editor("rome")), "compute", lambda *a, **k: pytest.fail("edited"))
    with pytest.raises(ValueError, match="batch_size=2: 'rome' edits one request per step"):
        _run(tiny_hooked, tmp_path / "x", batch_size=2)
    with pytest.raises(ValueError, match=r"checkpoints must be edit counts from 1 to 4.*\[1, 9\]"):
        _run(tiny_hooked, tmp_path / "y", checkpoints=(1, 9))
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 0"):
        _run(tiny_hooked, tmp_path / "z", batch_size=0)


def test_a_folder_of_another_run_is_refused(tiny_hooked, tmp_path):
    _run(tiny_hooked, tmp_path, checkpoints=(1,))
    with pytest.raises(ValueError, match="other hparams; use another folder"):
        _run(tiny_hooked, tmp_path, checkpoints=(1,), hparams=ROME.replace(v_num_grad_steps=3))


def test_memit_edits_in_batches_and_the_projection_labels_the_run(tiny_hooked, tmp_path):
    hp = MemitHparams(layers=(1,), v_num_grad_steps=3, mom2_adjustment=False, context_lengths=((1, 3),),
                      project="nullspace", nullspace_threshold=0.5)
    records = [_record(i, s) for i, s in enumerate(SUBJECTS)]
    weights = param_hash(tiny_hooked)
    result = seq.run_sequential(tiny_hooked, records, "memit", tmp_path, hparams=hp, batch_size=3,
                                checkpoints=(1, 4), generation_tokens=0, progress=False)
    assert param_hash(tiny_hooked) == weights
    assert [p.edits for p in result.points] == [3, 4] and result.label == "memit+nullspace"
    assert all(p.fluency is None for p in result.points)
    lines = [json.loads(x) for x in (tmp_path / "edits.jsonl").read_text().splitlines()]
    assert [x["case_ids"] for x in lines] == [[0, 1, 2], [3]]


def test_retention_counts_the_facts_still_known(tiny_hooked):
    facts = seq.known_held_out(tiny_hooked, _held_out(tiny_hooked), []).facts
    assert len(facts) >= 2 and seq.retention(tiny_hooked, facts) == 100.0
    wrong = [(p, (t + 1) % 50) for p, t in facts]
    assert seq.retention(tiny_hooked, wrong) == 0.0

"""run_sequential: the edits accumulate on one model, the curve is measured at the checkpoints,
the model ends bit-identical, and an interrupted run resumes to the same curve as an unbroken one."""

import json
from dataclasses import replace

import pytest
import torch

from toplens import EditRequest, editors
from toplens.core import nullspace
from toplens.core.covariance import corpus_fingerprint, key_second_moment
from toplens.core.nullspace import null_space
from toplens.analyses.evaluation import sequential as seq, sequential_settings
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


def _run(model, out, n_records=len(SUBJECTS), **kw):
    records = [_record(i, s) for i, s in enumerate(SUBJECTS[:n_records])]
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
                                checkpoints=(1, 4), generation_tokens=0, retention_facts=0, progress=False)
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


def test_without_held_out_records_retention_and_fluency_are_refused_unless_turned_off(tiny_hooked, tmp_path):
    with pytest.raises(ValueError, match=r"held_out: no records, so retention \(retention_facts=3\)"):
        _run(tiny_hooked, tmp_path / "a", held_out=())
    result = _run(tiny_hooked, tmp_path / "b", held_out=(), retention_facts=0, generation_tokens=0, checkpoints=(1,))
    assert result.retention_facts == 0 and result.points[0].retention is None and result.points[0].fluency is None
    with pytest.raises(ValueError, match="retention_facts must be a non-negative integer; got -1"):
        _run(tiny_hooked, tmp_path / "c", retention_facts=-1)


CORPUS = ("The violin is played with a bow.", "Paris lies on the Seine.", "A trumpet is made of brass.")
PROJECTED = ROME.replace(project="nullspace", nullspace_threshold=0.5)


def test_the_projection_takes_k0_from_the_given_corpus_and_each_run_starts_with_no_earlier_keys(
        tiny_hooked, tmp_path, monkeypatch):
    """K₀'s statistic comes from ``corpus``; K_p is empty when each run's first edit is computed,
    though the run before remembered keys; nothing of a run is left active after it."""
    made = []

    class Recording(seq.SequentialProjection):
        def space(self, adapter, layer, threshold):
            self.seen_keys = getattr(self, "seen_keys", []) + [sum(len(k) for k in self.keys.values())]
            return super().space(adapter, layer, threshold)

    monkeypatch.setattr(sequential_settings, "SequentialProjection", lambda **kw: made.append(Recording(**kw)) or made[-1])
    for name in ("a", "b"):
        _run(tiny_hooked, tmp_path / name, hparams=PROJECTED, corpus=list(CORPUS), checkpoints=(4,), generation_tokens=0)
    assert len(made) == 2 and all(p.corpus == CORPUS for p in made)
    for p in made:  # Û built first (no keys), the first edit with none, each later edit with one more
        assert p.seen_keys[:2] == [0, 0] and p.seen_keys[-1] == 3 and len(p.keys[1]) == 4
    expected = null_space(key_second_moment(tiny_hooked, 1, list(CORPUS)).float(), 1, 0.5).basis
    assert torch.equal(made[0].spaces[1, 0.5].basis, expected)
    assert json.loads((tmp_path / "a" / "run.json").read_text())["corpus"] == {"texts": corpus_fingerprint(list(CORPUS))}
    assert nullspace._ACTIVE.get() is None


def test_a_sampled_corpus_size_sets_the_statistics_texts(tiny_hooked, tmp_path):
    _run(tiny_hooked, tmp_path, hparams=PROJECTED, corpus_tokens=100, checkpoints=(1,), generation_tokens=0)
    stored = json.loads((tmp_path / "run.json").read_text())["corpus"]["sampled"]
    assert stored["n_texts"] == 2 and stored["n_tokens"] == 64  # ⌈100 / 64⌉ texts of 64 tokens


def test_corpus_options_are_checked_before_any_edit(tiny_hooked, tmp_path, monkeypatch):
    monkeypatch.setattr(type(editors.get_editor("rome")), "compute", lambda *a, **k: pytest.fail("edited"))
    cases = [(dict(corpus=list(CORPUS)), "only a run with project='nullspace' uses them; got project='none'"),
             (dict(hparams=PROJECTED, corpus=[" "]), "corpus has no text"),
             (dict(hparams=PROJECTED, corpus_tokens=0), "corpus_tokens must be a positive integer; got 0"),
             (dict(hparams=PROJECTED, corpus=list(CORPUS), corpus_tokens=10), "not both")]
    for i, (kw, message) in enumerate(cases):
        with pytest.raises(ValueError, match=message):
            _run(tiny_hooked, tmp_path / str(i), **kw)
        assert not (tmp_path / str(i)).exists()


def test_a_folder_of_an_earlier_version_resumes_and_its_nan_retention_reads_as_none(tiny_hooked, tmp_path):
    """run.json without the corpus key or a field added since (at its default), and a curve line
    with NaN retention, as earlier versions wrote them: the run resumes and reads None."""
    _run(tiny_hooked, tmp_path, hparams=PROJECTED, checkpoints=(1, 2), generation_tokens=0, n_records=2)
    run_json = json.loads((tmp_path / "run.json").read_text())
    del run_json["corpus"], run_json["hparams"]["precision"]
    (tmp_path / "run.json").write_text(json.dumps(run_json))
    curve = (tmp_path / "curve.jsonl").read_text().splitlines()
    first = {**json.loads(curve[0]), "retention": float("nan")}
    (tmp_path / "curve.jsonl").write_text(json.dumps(first) + "\n")  # the second checkpoint is measured again
    resumed = _run(tiny_hooked, tmp_path, hparams=PROJECTED, checkpoints=(1, 2), generation_tokens=0, n_records=2)
    assert [p.edits for p in resumed.points] == [1, 2]
    assert resumed.points[0].retention is None and resumed.points[1].retention is not None


def test_a_refused_request_is_recorded_left_unedited_and_the_run_goes_on(tiny_hooked, tmp_path, monkeypatch):
    """An edit the projection refuses (its key in the preserved span) is a line without a file;
    the run goes on, the point counts it, and a resume replays around it."""
    real = editors.get_editor("rome")
    original = type(real).compute

    def compute(self, model, requests, hparams=None, **options):
        if requests.subject == "guitar":
            raise nullspace.KeyInPreservedSpan("the edited key at layer 1 lies almost wholly in the preserved keys' span")
        return original(self, model, requests, hparams, **options)

    monkeypatch.setattr(type(real), "compute", compute)
    weights = param_hash(tiny_hooked)
    result = _run(tiny_hooked, tmp_path, checkpoints=(1, 4), generation_tokens=0)
    assert param_hash(tiny_hooked) == weights
    assert [(p.edits, p.refused) for p in result.points] == [(1, 0), (4, 1)]
    lines = [json.loads(x) for x in (tmp_path / "edits.jsonl").read_text().splitlines()]
    assert [x["file"] is None for x in lines] == [False, True, False, False] and "preserved" in lines[1]["refused"]
    assert len(list((tmp_path / "edits").glob("*.safetensors"))) == 3
    (tmp_path / "curve.jsonl").write_text((tmp_path / "curve.jsonl").read_text().splitlines()[0] + "\n")
    resumed = _run(tiny_hooked, tmp_path, checkpoints=(1, 4), generation_tokens=0)
    assert replace(resumed.points[1], seconds=0.0) == replace(result.points[1], seconds=0.0)

import dataclasses

import pytest

from tests.conftest import param_hash, unchecked

from toplens.analyses.evaluation import evaluate as ev
from toplens.analyses import sweep
from toplens.analyses.evaluation.records import Record
from toplens.analyses.sweep import SweepResult, at_la, default_las, la_sweep
from toplens import EditRequest
from toplens import editors
from toplens.editors import top
from toplens.editors.rome import RomeHparams
from toplens.editors.top import TopHparams

# In tiny random models an edit only takes when the subject is the prompt's last word.
FAST = TopHparams(layers=(1,), rel_feat_layer=1, v_num_grad_steps1=10, v_num_grad_steps2=15,
                  v_lr2=1.0, mom2_adjustment=False, context_lengths=((2, 3),))


def _record(case_id: int, subject: str) -> Record:
    return Record(
        case_id, EditRequest("Miles Davis plays the {}", subject, " Paris", " France"),
        paraphrase_prompts=(f"Jimi Hendrix plays the {subject}", f"The {subject}"),
        neighborhood_prompts=("Miles Davis plays the guitar", "Jimi Hendrix plays the guitar"),
        relation_specific_prompts=(f"The Eiffel Tower is located in {subject}", f"Toyota is {subject}"),
        generation_prompts=(f"Miles Davis plays the {subject}",),
    )


RECORDS = [_record(0, "trumpet"), _record(1, "piano")]


@pytest.mark.parametrize("layer, n_layers, expected", [
    (5, 30, [6, 10, 15, 25, 29]),
    (17, 48, [18, 22, 27, 43, 47]),
    (1, 4, [2, 3]),  # l+5, l+10 clip to L−1; L−5 clips to l+1
    (2, 4, [3]),
])
def test_default_las_are_clipped_and_deduplicated(layer, n_layers, expected):
    assert default_las(layer, n_layers) == expected


def test_default_las_needs_a_layer_after_the_edit_layer():
    with pytest.raises(ValueError, match="edit_layer"):
        default_las(3, 4)


def test_at_la_moves_the_last_edit_layers_relation_feature():
    assert at_la(FAST, 3).rel_feat_layer == 2
    two = FAST.replace(layers=(1, 2))
    assert at_la(two, 3).rel_feat_layer == 1


@pytest.mark.parametrize("las", [[1], [4], [2, "3"], []])
def test_bad_las_name_the_field(tiny_hooked, las):
    with unchecked(), pytest.raises(ValueError, match="las"):
        la_sweep(tiny_hooked, RECORDS, las, FAST, progress=False)


def test_wrong_hparams_and_no_records_name_the_field(tiny_hooked):
    with unchecked(), pytest.raises(ValueError, match="hparams"):
        la_sweep(tiny_hooked, RECORDS, [2], RomeHparams(layer=1), progress=False)
    with pytest.raises(ValueError, match="records"):
        la_sweep(tiny_hooked, [], [2], FAST, progress=False)


def test_each_la_edits_with_its_rel_feat_layer(tiny_hooked, monkeypatch):
    seen = []

    def spy(adapter, request, hparams, **options):
        seen.append((request.subject, hparams.layers, hparams.rel_feat_layer))
        return top.compute_one(adapter, request, hparams, **options)

    monkeypatch.setitem(editors._EDITORS, "top", dataclasses.replace(top.EDITOR, compute_edit=spy))
    la_sweep(tiny_hooked, RECORDS, [3, 2, 3], FAST, progress=False)
    assert seen == [("trumpet", (1,), 1), ("piano", (1,), 1), ("trumpet", (1,), 2), ("piano", (1,), 2)]


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
def test_sweep_on_a_tiny_model_reverts_and_skips_generation(request, name, monkeypatch):
    model = request.getfixturevalue(name)
    weights = param_hash(model)
    real_generate = ev.generate

    def no_generation(model, prompts, *, n_tokens, **kwargs):
        assert n_tokens == 0, "the sweep must not generate"
        return real_generate(model, prompts, n_tokens=n_tokens, **kwargs)

    monkeypatch.setattr(ev, "generate", no_generation)
    result = la_sweep(model, RECORDS, hparams=FAST, progress=False)
    assert param_hash(model) == weights
    assert result.las == [2, 3] and result.edit_layer == 1 and result.n_records == 2 and result.n_layers == 4
    for point in result.points:
        assert point.efficacy == 100.0  # subject last: TOP's edit takes on the rewrite prompt
        for rate in (point.generalization, point.s_specificity, point.r_specificity):
            assert rate is not None and 0.0 <= rate <= 100.0
        # each record's own rates, whose mean is the point's
        assert [c.case_id for c in point.cases] == [r.case_id for r in RECORDS]
        assert all(c.efficacy == 100.0 for c in point.cases)
        assert sum(c.r_specificity for c in point.cases) / len(point.cases) == pytest.approx(point.r_specificity)
    assert SweepResult.from_json(result.to_json()) == result


def test_preset_is_used_when_no_hparams_are_given(tiny_hooked, monkeypatch):
    monkeypatch.setattr("toplens.editors.presets.get_preset", lambda method, name, n_layers: FAST.replace(layers=(2,)))
    monkeypatch.setattr(sweep, "_sweep_one", lambda model, records, befores, hp, la, stop_words, bar:
                        sweep.SweepPoint(la, None, None, None, None))
    result = la_sweep(tiny_hooked, RECORDS[:1], progress=False)
    assert result.edit_layer == 2 and result.las == [3] and result.hparams["layers"] == [2]

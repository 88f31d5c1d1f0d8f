"""Every editor behind the one interface: same module shape, stages as data that ``observe`` sees,
one request or a sequence, the model left unchanged, and low-rank edits."""

import pytest
import torch

from tests.conftest import param_hash, unchecked

from toplens import EditRequest, ModelAdapter, apply_edit, editor_names, get_editor
from toplens.core.hparams import Hparams
from toplens.editors import memit, rets, rome, top
from toplens.editors.base import Editor

REQUESTS = (EditRequest("{} plays the", "Miles Davis", " guitar", " trumpet"),
            EditRequest("{} is located in", "The Eiffel Tower", " Rome", " Paris"))
TEMPLATES = ("{}", "Paris is the capital of France. {}")
FAST = {
    "rome": rome.RomeHparams(layer=1, v_num_grad_steps=4, mom2_adjustment=False),
    "rets": rets.RetsHparams(layer=2, v_num_grad_steps=4, mom2_adjustment=False),
    "top": top.TopHparams(layers=(1,), rel_feat_layer=1, v_num_grad_steps1=3, v_num_grad_steps2=3,
                          mom2_adjustment=False),
    "memit": memit.MemitHparams(layers=(1, 2), v_num_grad_steps=4, mom2_adjustment=False, mom2_update_weight=1.0),
}
MODULES = {"rome": rome, "rets": rets, "top": top, "memit": memit}


@pytest.mark.parametrize("method", ["rome", "rets", "top", "memit"])
def test_every_editor_module_has_the_same_shape(method):
    module = MODULES[method]
    editor = get_editor(method)
    assert isinstance(editor, Editor) and module.EDITOR is editor and editor.name == method
    assert module.compute == editor.compute and module.apply == editor.apply
    assert issubclass(editor.hparams_type, Hparams)
    hp = FAST[method]
    assert hp.edit_layers and all(isinstance(l, int) for l in hp.edit_layers)
    assert hp.with_steps(2) != hp and hp.with_steps(2).with_steps(2) == hp.with_steps(2)
    assert method in editor_names()


@pytest.mark.parametrize("method", ["rome", "rets", "top", "memit"])
def test_observe_sees_every_declared_stage_in_order(tiny_hooked, method):
    editor = get_editor(method)
    stages = editor.stages(FAST[method])
    seen = []
    weights = param_hash(tiny_hooked)
    edit = editor.compute(tiny_hooked, REQUESTS[0], FAST[method], templates=TEMPLATES,
                          observe=lambda stage, event: seen.append((stage, event.final, event.delta.shape)))
    assert param_hash(tiny_hooked) == weights
    order = [s for s, final, _ in seen if final]
    assert order == list(stages)  # each stage ends exactly once, in the declared order
    for stage, _, shape in seen:
        assert stage in stages and shape == (ModelAdapter(tiny_hooked).d_model,)
    assert edit.layers == tuple(sorted(set(FAST[method].edit_layers)))


@pytest.mark.parametrize("method", ["rome", "rets", "top"])
def test_a_sequence_is_edited_one_request_after_the_other(tiny_hooked, method):
    """compute on a sequence = the sequential apply: its merged low-rank deltas equal the sum of
    the per-request deltas, each computed with the earlier ones applied."""
    editor = get_editor(method)
    weights = param_hash(tiny_hooked)
    joint = editor.compute(tiny_hooked, REQUESTS, FAST[method], templates=TEMPLATES)
    assert param_hash(tiny_hooked) == weights
    assert joint.requests == REQUESTS and all(d.rank == 2 for d in joint.deltas)
    with editor.apply(tiny_hooked, REQUESTS, FAST[method], templates=TEMPLATES) as handle:
        assert len(handle.edits) == 2
        for d in joint.deltas:
            expected = sum(e.deltas[e.layers.index(d.layer)].delta for e in handle.edits)
            torch.testing.assert_close(d.delta, expected, atol=1e-5, rtol=1e-4)
    assert param_hash(tiny_hooked) == weights
    assert len(joint.details.items) == 2


def test_memit_edits_a_batch_at_once_with_rank_at_most_its_size(tiny_hooked):
    edit = memit.compute(tiny_hooked, REQUESTS, FAST["memit"], templates=TEMPLATES)
    assert all(d.rank == len(REQUESTS) for d in edit.deltas)
    adapter = ModelAdapter(tiny_hooked)
    weights = param_hash(tiny_hooked)
    saved = {d.layer: adapter.w_out(d.layer).detach().clone() for d in edit.deltas}
    with apply_edit(tiny_hooked, edit):
        for d in edit.deltas:
            torch.testing.assert_close(adapter.w_out(d.layer) - saved[d.layer], (d.u @ d.v).float(),
                                       atol=1e-6, rtol=1e-5)
    assert param_hash(tiny_hooked) == weights


def test_wrong_hparams_type_is_rejected_before_any_work(tiny_hooked):
    with unchecked(), pytest.raises(TypeError, match="hparams for 'top' must be a TopHparams; got RomeHparams"):
        top.compute(tiny_hooked, REQUESTS[0], FAST["rome"])
    with unchecked(), pytest.raises(TypeError, match=r"requests\[1\] must be an EditRequest"):
        rome.compute(tiny_hooked, [REQUESTS[0], "Paris"], FAST["rome"])


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="method must be one of"):
        get_editor("pmet")

import math

import pytest
import torch

from toplens.analyses.tracing.maps import position_roles
from toplens.analyses.tracing.saliency import gradient_saliency
from toplens.analyses.tracing.saliency_probe import SaliencyProbe, prompt_alignment, rewriting_nll
from toplens import EditRequest, ModelAdapter, hook_name, locate
from toplens.editors.rome import RomeHparams
from toplens.editors.memit import MemitHparams
from toplens.editors.rets import RetsHparams
from toplens.editors.top import TopHparams
from toplens.core.objective import rewrite_batch

REQUEST = EditRequest("{} plays the", "Miles Davis", " Paris", " trumpet")
TEMPLATES = ("{}", "Paris is the capital of France. {}", "The Eiffel Tower is located in Paris. {}")
ROME = RomeHparams(layer=1, v_num_grad_steps=4, mom2_adjustment=False)
TOP = TopHparams(layers=(1,), rel_feat_layer=1, v_num_grad_steps1=3, v_num_grad_steps2=3, mom2_adjustment=False)


def _saliency(model, method="rome", **kw):
    hp = ROME if method == "rome" else TOP
    return gradient_saliency(model, REQUEST, method, hp, templates=kw.pop("templates", TEMPLATES), **kw)


def test_map_shape_roles_and_values(tiny_model):
    adapter = ModelAdapter(tiny_model)
    result = _saliency(tiny_model)
    bare = locate(adapter, REQUEST.prompt, REQUEST.subject)
    n_pos = len(bare.tokens)
    for m in (result.grad_norm, result.grad_x_act):
        assert m.values.shape == (adapter.n_layers, n_pos)
        assert torch.isfinite(m.values).all() and (m.values >= 0).all()
        assert (m.values.sum(-1) > 0).all()  # every layer sees gradient
    assert list(result.grad_norm.roles) == position_roles(n_pos, bare.subject_span, bare.last_relation)
    assert {"subject", "last_subject", "relation", "last_relation"} <= set(result.grad_norm.roles)
    assert result.steps == ROME.v_num_grad_steps - 1 and result.n_prompts == len(TEMPLATES)
    # After the last block only the predicting position carries gradient.
    last = result.grad_norm.values[-1]
    assert last.argmax() == bare.last_relation and last[: bare.last_relation].abs().max() == 0


def test_gradients_match_autograd(tiny_hooked):
    """The backward hooks record exactly ∂L/∂h of the full-model rewriting loss."""
    adapter = ModelAdapter(tiny_hooked)
    batch = rewrite_batch(adapter, REQUEST, ("{}",), ["{} is a"])
    probe = SaliencyProbe(adapter, batch, prompt_alignment(adapter, REQUEST, ("{}",)))
    probe.record([])
    grad_map, gxa_map = probe.maps()
    acts = {}
    leaf = (hook_name("embed"), lambda act, hook: act.detach().requires_grad_(True))
    keep = [(hook_name("resid_post", l), lambda act, hook: acts.__setitem__(hook.name, act)) for l in range(4)]
    with torch.enable_grad(), adapter.frozen(), adapter.hooks([leaf, *keep]):
        loss = rewriting_nll(adapter, batch)
        names = [hook_name("resid_post", l) for l in range(4)]
        grads = torch.autograd.grad(loss, [acts[n] for n in names])
    n_pos = grad_map.shape[1]
    for layer, (grad, name) in enumerate(zip(grads, names)):
        torch.testing.assert_close(grad_map[layer], grad[0, :n_pos].norm(dim=-1))
        torch.testing.assert_close(gxa_map[layer], (grad * acts[name]).sum(-1).abs()[0, :n_pos].detach())


def test_alignment_maps_every_prompt_onto_the_bare_prompt(tiny_model):
    adapter = ModelAdapter(tiny_model)
    alignment = prompt_alignment(adapter, REQUEST, TEMPLATES)
    batch = rewrite_batch(adapter, REQUEST, TEMPLATES, ["{} is a"])
    bare = locate(adapter, REQUEST.prompt, REQUEST.subject)
    assert alignment[0].tolist() == list(range(len(bare.tokens)))
    assert alignment[:, bare.last_subject].tolist() == batch.last_subject[: len(TEMPLATES)].tolist()
    assert alignment[:, bare.last_relation].tolist() == batch.last_relation[: len(TEMPLATES)].tolist()
    for row in range(len(TEMPLATES)):
        for i in range(bare.subject_start, len(bare.tokens)):
            assert batch.tokens[row, alignment[row, i]] == bare.tokens[i] or i == bare.subject_start


def test_user_hook_fires_and_a_harmless_one_changes_nothing(tiny_model):
    plain = _saliency(tiny_model)
    calls = []
    with tiny_model.hooks(fwd_hooks=[(hook_name("resid_post", 0), lambda act, hook: calls.append(1))]):
        with_hook = _saliency(tiny_model)
    assert len(calls) >= with_hook.steps
    torch.testing.assert_close(with_hook.grad_norm.values, plain.grad_norm.values)
    torch.testing.assert_close(with_hook.grad_x_act.values, plain.grad_x_act.values)


@pytest.mark.parametrize("stages", [(1,), (2,), (1, 2)])
def test_top_stages(tiny_hooked, stages):
    result = _saliency(tiny_hooked, "top", stages=stages)
    assert result.relation_layer == 2 and result.stages == stages
    assert result.steps == 2 * len(stages)
    assert torch.isfinite(result.grad_norm.values).all() and result.grad_norm.values.sum() > 0


def test_summary_and_json(tiny_bridge):
    result = _saliency(tiny_bridge)
    summary = result.summary()["grad_norm"]
    assert set(summary["overall"]) >= {"last_subject", "last_relation", "subject", "relation"}
    assert 0 <= summary["fraction_argmax_last_subject_or_relation"] <= 1
    assert summary["layers_from_edit"] == 4 - ROME.layer
    data = result.to_json()
    argmax = data["grad_norm"]["argmax"]
    assert len(argmax) == 4 and argmax[-1]["role"] == "last_relation"
    assert argmax[-1]["token"] == result.grad_norm.tokens[argmax[-1]["index"]]
    assert all(math.isfinite(v) for row in data["grad_x_act"]["values"] for v in row)


def test_bad_inputs_name_the_field(tiny_hooked):
    with pytest.raises(ValueError, match="method"):
        gradient_saliency(tiny_hooked, REQUEST, "pmet", ROME)
    with pytest.raises(ValueError, match="hparams"):
        gradient_saliency(tiny_hooked, REQUEST, "top", ROME)
    with pytest.raises(ValueError, match="layer=7"):
        gradient_saliency(tiny_hooked, REQUEST, "rome", ROME.replace(layer=7), templates=TEMPLATES)
    with pytest.raises(ValueError, match="stages"):
        gradient_saliency(tiny_hooked, REQUEST, "top", TOP, stages=(3,), templates=TEMPLATES)
    with pytest.raises(ValueError, match="steps"):
        gradient_saliency(tiny_hooked, REQUEST, "rome", ROME, steps=0)


def test_any_editor_is_observed_through_its_stages(tiny_hooked):
    """RETS and MEMIT are not named in the saliency code: their stages (δ at the last prompt token
    of layer 2; δ on the residual after the last MEMIT layer) say where the probe adds δ."""
    rets = RetsHparams(layer=2, v_num_grad_steps=3, mom2_adjustment=False)
    result = gradient_saliency(tiny_hooked, REQUEST, "rets", rets, templates=TEMPLATES)
    assert result.method == "rets" and result.edit_layer == 2 and result.steps == 2 and result.stages == ()
    memit = MemitHparams(layers=(1, 2), v_num_grad_steps=3, mom2_adjustment=False, mom2_update_weight=1.0)
    result = gradient_saliency(tiny_hooked, REQUEST, "memit", memit, templates=TEMPLATES)
    assert result.steps == 2 and torch.isfinite(result.grad_norm.values).all()


def test_a_row_in_the_other_word_order_is_aligned_by_its_subject_and_last_token(tiny_model):
    from toplens.core.templates import relation_reordered
    adapter = ModelAdapter(tiny_model)
    rows = relation_reordered(TEMPLATES, REQUEST.prompt)
    alignment = prompt_alignment(adapter, REQUEST, rows)
    batch = rewrite_batch(adapter, REQUEST, rows, ["{} is a"])
    bare = locate(adapter, REQUEST.prompt, REQUEST.subject)
    assert alignment[:, bare.last_subject].tolist() == batch.last_subject[: len(rows)].tolist()
    assert alignment[:, bare.last_relation].tolist() == batch.last_relation[: len(rows)].tolist()

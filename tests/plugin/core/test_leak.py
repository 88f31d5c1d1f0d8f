"""o* kept out of the subject's own text: zero where o* stays margin nats below the unedited model's
top token, growing as it overtakes, down-weighted where the model expected o, and a TOP stage 2 that, given
the term, lets o* rise less in that text."""

import pytest
import torch

from toplens import ModelAdapter
from toplens.core.fold import fold_at
from toplens.core.keys import key_value_at
from toplens.core.leak import ObjectLeak, with_object_kept_out
from toplens.core.preservation import WithPenalty, objects_first_tokens, subject_texts
from toplens.editors import top
from tests.plugin.editors.test_top import FAST, REQUEST, TEMPLATES


def _leak(adapter, fold=None, margin=2.0, true=True):
    tokens, last = subject_texts(adapter, REQUEST.subject, 3, 4)
    v_init = key_value_at(adapter, 1, [(REQUEST.prompt, REQUEST.subject)])[1][0]
    new_id, true_id = objects_first_tokens(adapter, REQUEST)
    return ObjectLeak(adapter, tokens, last, 1, v_init, fold, new_id=new_id, true_id=true_id if true else None,
                      margin=margin), v_init


def _towards_new(adapter, v_init):
    """A δ at the subject that pushes the unembedding towards o*'s first token."""
    new_id = objects_first_tokens(adapter, REQUEST)[0]
    direction = adapter.model.W_U[:, new_id].detach().float()
    return direction / direction.norm() * float(v_init.norm()) * 20


def test_no_change_no_penalty_and_overtaking_is_penalized(tiny_model):
    """With no edit, o* sits below the top token everywhere: no penalty at margin 0, and at a margin
    so large that every hinge is open the penalty grows by exactly the added margin (a weighted
    mean); an edit pushing o* up is penalized more, with a gradient."""
    adapter = ModelAdapter(tiny_model)
    leak, v_init = _leak(adapter)
    zero = torch.zeros_like(v_init)
    assert float(_leak(adapter, margin=0.0)[0](zero).total) == pytest.approx(0.0, abs=1e-6)  # o* never above top
    wide, wider = (float(_leak(adapter, margin=m)[0](zero).total) for m in (100.0, 150.0))
    assert wide > 0 and wider - wide == pytest.approx(50.0, abs=1e-3)
    delta = _towards_new(adapter, v_init).requires_grad_(True)
    pushed = leak(delta)
    assert float(pushed.total) > float(leak(zero).total)
    pushed.total.backward()
    assert delta.grad is not None and float(delta.grad.norm()) > 0


def test_the_old_objects_slot_is_down_weighted(tiny_model):
    """A position where the unedited model is sure of o weighs nothing: the penalty with o named
    is the one without, less the positions' share of P(o) (checked on a one-hot of each position)."""
    adapter = ModelAdapter(tiny_model)
    with_o, _ = _leak(adapter)
    without_o, _ = _leak(adapter, true=False)
    assert torch.all(with_o._weight <= without_o._weight) and torch.all(with_o._weight >= 0)
    sure = with_o._clean[:, with_o.true_id].exp().argmax()
    assert float(without_o._weight[sure]) == 1.0  # o* is not the top token there: the check below can fail
    assert float(with_o._weight[sure]) == pytest.approx(float(without_o._weight[sure])
                                                        * (1 - float(with_o._clean[sure, with_o.true_id].exp())))
    assert torch.equal(without_o._weight, (without_o._top != without_o.new_id).float())


def test_zero_weight_is_the_objective_itself_and_a_weight_wraps_it(tiny_model):
    adapter = ModelAdapter(tiny_model)
    v_init = key_value_at(adapter, 1, [(REQUEST.prompt, REQUEST.subject)])[1][0]
    main = lambda d: None  # noqa: E731
    assert with_object_kept_out(main, adapter, REQUEST, 1, v_init, 0.0, (3, 4)) is main
    wrapped = with_object_kept_out(main, adapter, REQUEST, 1, v_init, 2.0, (3, 4))
    assert isinstance(wrapped, WithPenalty) and isinstance(wrapped.penalty, ObjectLeak) and wrapped.weight == 2.0


def test_top_with_the_term_lets_o_star_rise_less_in_the_subjects_text(tiny_model):
    adapter = ModelAdapter(tiny_model)
    hp = FAST.replace(stage2_loss="readout", stage2_site="fold", stage2_reset="none", v_num_grad_steps2=20,
                      stage2_keep_texts=(3, 4))
    leak, _ = _leak(adapter, fold_at(adapter, REQUEST, 1, TEMPLATES), margin=0.0)
    risen = []
    for weight in (0.0, 50.0):
        info = top.compute(tiny_model, REQUEST, hp.replace(stage2_leak_weight=weight), templates=TEMPLATES)
        info = info.details.layers[0]
        with torch.no_grad():
            logp = leak.edited_logits(info.v_star - info.v_init).float().log_softmax(-1)
        risen.append(float(logp[:, leak.new_id].mean()))
    assert "penalty" in info.stage2.parts[-1]
    assert risen[1] < risen[0], risen

"""The fast path (bfloat16 forward passes while δ is optimized, the early stop on the fit): the
edit takes and reverts bit for bit on both backends (and on the short path's fewer steps), the stop comes earlier, and the forward
passes of the loop really run in bfloat16 while everything measured after stays float32."""

import math

import pytest
import torch

from tests.conftest import param_hash
from toplens import EditRequest, rome, top
from toplens.core.scoring import target_probability
from toplens.editors.presets import FAST_CONTEXT, fast_path, reference_path, short_path
from toplens.editors.rome import RomeHparams
from toplens.editors.top import TopHparams

REQUEST = EditRequest("Miles Davis plays the {}", "trumpet", " Paris", " France")
ROME = RomeHparams(layer=1, v_num_grad_steps=25, mom2_adjustment=False, context_lengths=((3, 4),))
TOP = TopHparams(layers=(1,), rel_feat_layer=1, v_num_grad_steps1=15, v_num_grad_steps2=15, mom2_adjustment=False,
                 context_lengths=((3, 4),), v_weight_decay=0.1, clamp_norm_factor=10.0)


@pytest.mark.parametrize("path", [fast_path, short_path], ids=["fast", "short"])
@pytest.mark.parametrize("editor, hp", [(rome, ROME), (top, TOP)], ids=["rome", "top"])
def test_the_fast_and_short_paths_edits_take_and_revert_bit_for_bit(tiny_model, editor, hp, path):
    start = param_hash(tiny_model)
    before = target_probability(tiny_model, REQUEST.text, REQUEST.target_new)
    # the tiny models keep their own context templates: with FAST_CONTEXT's two prefixes the fold
    # of a random Llama loses most of ROME's δ on both paths alike (a property of the random
    # weights; the rows' effect on quality is measured on the real model, docs/benchmarks.md)
    with editor.apply(tiny_model, REQUEST, path(hp).replace(context_lengths=hp.context_lengths)):
        after = target_probability(tiny_model, REQUEST.text, REQUEST.target_new)
    assert math.log(after) > math.log(before) + 1.0
    assert param_hash(tiny_model) == start
    with editor.apply(tiny_model, REQUEST, path(hp)):  # the shipped rows: the edit changes W_out
        assert param_hash(tiny_model) != start
    assert param_hash(tiny_model) == start


def test_the_fit_rule_stops_where_the_decay_term_would_keep_the_total_above_the_threshold(tiny_hooked):
    hp = ROME.replace(v_weight_decay=2.0, early_stop_loss=2.2)
    total = rome.compute(tiny_hooked, REQUEST, reference_path(hp)).details.value.trace
    fit = rome.compute(tiny_hooked, REQUEST, hp.replace(stop_rule="fit")).details.value.trace
    assert not total.converged and fit.converged and fit.steps < total.steps
    assert fit.parts[-1]["nll"] < 2.2 <= total.losses[-1]


def test_the_loop_runs_in_bfloat16_and_the_rest_in_float32(tiny_hooked):
    seen = []

    def record(act, hook):
        seen.append(act.dtype)

    with tiny_hooked.hooks(fwd_hooks=[("blocks.2.hook_mlp_out", record)]):  # a product: bfloat16 under autocast
        edit = rome.compute(tiny_hooked, REQUEST, fast_path(ROME).replace(precision="bfloat16"))
    assert torch.bfloat16 in seen
    assert edit.deltas[0].u.dtype == torch.float32 and edit.deltas[0].v.dtype == torch.float32
    assert isinstance(edit.details.value.target_prob, float)


def test_the_reference_path_restores_the_published_precision_and_stop():
    hp = reference_path(fast_path(ROME))
    assert (hp.precision, hp.stop_rule) == ("float32", "total")
    assert hp == ROME.replace(context_lengths=FAST_CONTEXT)


@pytest.mark.parametrize("editor, hp", [(rome, ROME), (top, TOP)], ids=["rome", "top"])
def test_the_fast_path_optimizes_fewer_rows(tiny_hooked, editor, hp):
    """The fast path's rewriting batch holds the bare prompt and FAST_CONTEXT's prefixes, and the
    loss the loop sees is computed over exactly those rows."""
    shapes = []
    with tiny_hooked.hooks(fwd_hooks=[("blocks.3.hook_resid_post", lambda act, hook: shapes.append(act.shape[0]))]):
        editor.compute(tiny_hooked, REQUEST, fast_path(hp))
    n_rows = 1 + sum(n for n, _ in FAST_CONTEXT)
    assert shapes.count(n_rows + 1) >= 2  # the rewriting rows and the KL prompt, in one batch, every step
    assert max(shapes) == n_rows + 1

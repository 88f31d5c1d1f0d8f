import math

import pytest
import torch

from tests.conftest import param_hash, unchecked

from toplens import EditRequest, ModelAdapter, apply_edit
from toplens.editors import rets
from toplens.core.fold import fold_at
from toplens.editors.rets import RetsHparams, constrained_second_moment, default_constraint_prompts, last_token_keys
from toplens.core.hparams import HparamsError
from toplens.core.keys import key_value_at, mean_key
from toplens.core.scoring import target_probability
from toplens.core.templates import context_templates

REQUEST = EditRequest("Miles Davis plays the {}", "trumpet", " Paris", " France")
OTHERS = ("Miles Davis plays the guitar", "Miles Davis plays the capital", "Miles Davis plays the Tower")
FAST = RetsHparams(layer=2, v_num_grad_steps=12, mom2_adjustment=False, context_lengths=((3, 4),))


def test_compute_leaves_model_unchanged_and_apply_edits(tiny_model):
    weights = param_hash(tiny_model)
    before = target_probability(tiny_model, REQUEST.text, REQUEST.target_new)
    edit = rets.compute(tiny_model, REQUEST, FAST)
    assert param_hash(tiny_model) == weights
    assert edit.method == "rets" and edit.layers == (2,)
    summary = edit.details.summary()
    assert summary["steps"] > 0 and summary["n_constraints"] == len(rets.CONSTRAINT_SUBJECTS)
    handle = apply_edit(tiny_model, edit)
    after = target_probability(tiny_model, REQUEST.text, REQUEST.target_new)
    handle.revert()
    assert math.log(after) > math.log(before) + 1.0
    assert param_hash(tiny_model) == weights


def test_value_is_taken_at_the_last_prompt_token(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    edit = rets.compute(tiny_hooked, REQUEST, FAST, constraint_prompts=OTHERS)
    _, values = key_value_at(adapter, 2, [(REQUEST.prompt, REQUEST.subject)], role="relation")
    torch.testing.assert_close(edit.details.value.init, values[0])
    templates = context_templates(tiny_hooked, FAST.context_lengths)
    k_star = mean_key(adapter, 2, templates, REQUEST.prompt, REQUEST.subject, role="relation")
    with apply_edit(tiny_hooked, edit):
        out = adapter.mlp_output(2, k_star)
    torch.testing.assert_close(out, edit.details.value.optimized, atol=1e-4, rtol=1e-4)
    assert edit.details.constraint_prompts == OTHERS


@pytest.mark.parametrize("mom2", [False, True])
def test_subject_constraint_protects_other_subjects(tiny_hooked, mom2):
    adapter = ModelAdapter(tiny_hooked)
    templates = context_templates(tiny_hooked, FAST.context_lengths)
    _, values = key_value_at(adapter, 2, [(REQUEST.prompt, REQUEST.subject)], role="relation")
    v_star = values[0] + torch.randn(adapter.d_model, generator=torch.Generator().manual_seed(0))
    k_star = mean_key(adapter, 2, templates, REQUEST.prompt, REQUEST.subject, role="relation")
    others = last_token_keys(adapter, 2, OTHERS)

    def effect(weight):
        hp = FAST.replace(constraint_weight=weight, mom2_adjustment=mom2)
        c = constrained_second_moment(adapter, hp, OTHERS)
        delta = fold_at(adapter, REQUEST, 2, templates, role="relation", covariance=c).delta(v_star).delta
        torch.testing.assert_close(adapter.mlp_output(2, k_star) + k_star @ delta, v_star, atol=1e-4, rtol=1e-4)
        return (others @ delta).norm(dim=-1)

    free, constrained = effect(0.0), effect(10.0)
    assert bool((constrained < 0.5 * free).all())


def test_default_constraints_fill_the_prompt_with_other_subjects():
    prompts = default_constraint_prompts(EditRequest("{} was born in", "Paris", " Rome"))
    assert "Tokyo was born in" in prompts and "Paris was born in" not in prompts
    assert len(prompts) == len(rets.CONSTRAINT_SUBJECTS) - 1


def test_own_prompt_is_dropped_from_the_constraints(tiny_hooked):
    edit = rets.compute(tiny_hooked, REQUEST, FAST.replace(v_num_grad_steps=1),
                        constraint_prompts=(REQUEST.text,) + OTHERS)
    assert edit.details.constraint_prompts == OTHERS


def test_layer_out_of_range_changes_nothing(tiny_hooked):
    weights = param_hash(tiny_hooked)
    with pytest.raises(ValueError, match="RetsHparams.layer=4"):
        rets.apply(tiny_hooked, REQUEST, FAST.replace(layer=4))
    assert param_hash(tiny_hooked) == weights


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"layer": -1}, "RetsHparams.layer must be non-negative"),
        ({"constraint_weight": -1.0}, "RetsHparams.constraint_weight must be a finite non-negative"),
        ({"v_lr": math.nan}, "RetsHparams.v_lr must be a finite positive number; got nan"),
        ({"key": "mean"}, "RetsHparams.key"),
        ({"kl_prompt": "{} {}"}, "RetsHparams.kl_prompt"),
    ],
)
def test_bad_hparams_name_the_field(changes, message):
    with unchecked(), pytest.raises(HparamsError, match=message):
        FAST.replace(**changes)


def test_hparams_json_round_trip():
    assert RetsHparams.from_json(FAST.to_json()) == FAST
    with pytest.raises(HparamsError, match="RetsHparams has no field"):
        RetsHparams.from_dict({"layers": (3,)})

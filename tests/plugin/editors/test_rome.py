import math

import pytest
import torch

from tests.conftest import param_hash

from toplens import EditRequest, ModelAdapter, RequestError, apply_edit, hook_name, rome
from toplens.editors.rome import RomeHparams
from toplens.core.hparams import HparamsError
from toplens.core.keys import key_value_at, mean_key
from toplens.core.optimize import NonFiniteLossError
from toplens.core.scoring import target_probability
from toplens.core.templates import context_templates

# In random tiny models attention is nearly uniform, so the subject is put last in the prompt,
# where its value reaches the prediction directly.
REQUEST = EditRequest("Miles Davis plays the {}", "trumpet", " Paris", " France")
FAST = RomeHparams(layer=1, v_num_grad_steps=15, mom2_adjustment=False, context_lengths=((3, 4),))


SECOND = EditRequest("Paris is the capital of {}", "France", " Japan")


def test_compute_leaves_model_unchanged_and_apply_edits(tiny_model):
    weights = param_hash(tiny_model)
    before = target_probability(tiny_model, REQUEST.text, REQUEST.target_new)
    edit = rome.compute(tiny_model, REQUEST, FAST)
    assert param_hash(tiny_model) == weights
    assert edit.layers == (1,) and edit.details.value.trace.steps > 0
    with rome.apply(tiny_model, REQUEST, FAST):
        after = target_probability(tiny_model, REQUEST.text, REQUEST.target_new)
    assert math.log(after) > math.log(before) + 1.0
    assert param_hash(tiny_model) == weights


@pytest.mark.parametrize("key_mode", ["consistent", "original"])
def test_fold_writes_v_star_for_its_key(tiny_hooked, key_mode):
    adapter = ModelAdapter(tiny_hooked)
    hp = FAST.replace(key=key_mode)
    edit = rome.compute(tiny_hooked, REQUEST, hp)
    templates = context_templates(tiny_hooked, hp.context_lengths)
    if key_mode == "consistent":
        key = mean_key(adapter, 1, templates, REQUEST.prompt, REQUEST.subject)
    else:
        key = key_value_at(adapter, 1, [(REQUEST.prompt, REQUEST.subject)])[0][0]
    with apply_edit(tiny_hooked, edit):
        out = adapter.mlp_output(1, key)
    torch.testing.assert_close(out, edit.details.value.optimized, atol=1e-4, rtol=1e-4)


def test_mom2_and_sequential_requests(tiny_hooked):
    weights = param_hash(tiny_hooked)
    handle = rome.apply(tiny_hooked, [REQUEST, SECOND], FAST.replace(mom2_adjustment=True))
    assert len(handle.edits) == 2 and param_hash(tiny_hooked) != weights
    handle.revert()
    assert param_hash(tiny_hooked) == weights


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: EditRequest("The capital of X is", "Paris", " Italy"), RequestError, "EditRequest.prompt"),
        (lambda: EditRequest("{} and {}", "Paris", " Italy"), RequestError, "found 2"),
        (lambda: EditRequest("{} is", "Paris", " "), RequestError, "EditRequest.target_new"),
    ],
)
def test_malformed_requests(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_subject_not_in_tokenized_prompt_after_an_applied_edit_changes_nothing(tiny_hooked):
    """The bad request comes second: the first one's edit is already in the weights when it fails."""
    weights = param_hash(tiny_hooked)
    bad = EditRequest("{}is the capital of France", "Par", " Italy")
    with pytest.raises(RequestError, match="EditRequest.subject 'Par' is not found"):
        rome.apply(tiny_hooked, [REQUEST, bad], FAST)
    assert param_hash(tiny_hooked) == weights


@pytest.mark.parametrize("layer, message", [(-1, "RomeHparams.layer must be non-negative"),
                                            (4, "RomeHparams.layer=4"), (99, "RomeHparams.layer=99")])
def test_layer_out_of_range_is_named(tiny_hooked, layer, message):
    with pytest.raises(HparamsError if layer < 0 else ValueError, match=message):
        rome.apply(tiny_hooked, REQUEST, FAST.replace(layer=layer) if layer >= 0 else RomeHparams(layer=layer))


@pytest.mark.parametrize("exception", [RuntimeError("injected"), KeyboardInterrupt("injected")])
def test_a_failure_after_the_first_edit_is_applied_changes_nothing(tiny_model, monkeypatch, exception):
    """The second request's fold fails after the first request's edit is written into W_out."""
    weights = param_hash(tiny_model)
    original, seen = rome.fold_at, []

    def fold_at(adapter, *args, **kwargs):
        seen.append(param_hash(adapter))
        if len(seen) == 2:
            raise exception
        return original(adapter, *args, **kwargs)

    monkeypatch.setattr(rome, "fold_at", fold_at)
    with pytest.raises(type(exception), match="injected"):
        rome.apply(tiny_model, [REQUEST, SECOND], FAST)
    assert seen[0] == weights and seen[1] != weights  # the first edit was in the weights
    assert param_hash(tiny_model) == weights


def test_model_without_mlp(tiny_attn_only):
    with pytest.raises(ValueError, match="model has no MLP"):
        rome.compute(tiny_attn_only, REQUEST, FAST)


def test_bad_hparams_name_the_field():
    with pytest.raises(HparamsError, match=r"RomeHparams.v_lr must be a finite positive number; got nan"):
        RomeHparams(v_lr=math.nan)
    with pytest.raises(HparamsError, match="RomeHparams has no field"):
        RomeHparams.from_dict({"layer": 3, "lr": 1.0})
    assert RomeHparams.from_json(FAST.to_json()) == FAST


def test_nan_during_optimization_aborts_without_changing_weights(tiny_hooked):
    weights = param_hash(tiny_hooked)
    poison = (hook_name("resid_post", 3), lambda act, hook: act * float("nan"))
    templates = context_templates(tiny_hooked, FAST.context_lengths)  # drawn before the poison
    with tiny_hooked.hooks(fwd_hooks=[poison]):
        with pytest.raises(NonFiniteLossError, match="no weight was changed"):
            rome.apply(tiny_hooked, REQUEST, FAST, templates=templates)
    assert param_hash(tiny_hooked) == weights

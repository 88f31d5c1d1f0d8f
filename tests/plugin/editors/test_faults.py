"""Nothing lost, nothing silently wrong: an interrupt (KeyboardInterrupt) or an error
(RuntimeError) at any stage of ``compute`` or ``apply`` leaves every parameter and buffer
bit-identical, no hook attached, no edit handle holding a layer and every ``requires_grad`` as it
was; and a non-finite edit is refused with a FloatingPointError, the weights unchanged.

Faults are injected by wrapping functions the editors call at different stages and raising on
the first or on the last of their calls in a clean run of the same operation (two requests, so
the last call falls in the second request, or, for MEMIT, in its later target or layer):

- ``stage``: the start of an optimization stage (``core.value.optimize``, the shared loop);
- ``step``: inside the loop, after an Adam step (``core.optimize._clamp``);
- ``fold``: the rank-one fold (``core.fold.rank_one_fold``) or MEMIT's solve (``solve_update``);
- ``covariance``: the keys' second moment (``core.covariance.key_second_moment``, mom2 on);
- ``write``: the weight write, when ``EditHandle.add`` fetches a W_out to add ΔW to (for a
  several-layer delta the later fetch comes after the earlier layer was written).
"""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch

import toplens.core.covariance as covariance_module
import toplens.core.edits as edits_module
import toplens.core.fold as fold_module
import toplens.core.optimize as optimize_module
import toplens.core.value as value_module
import toplens.editors.memit as memit_module
from tests.conftest import TINY_MODELS, param_hash

from toplens import EditRequest, ModelAdapter, hook_name
from toplens.editors import MemitHparams, RetsHparams, RomeHparams, TopHparams, get_editor
from toplens.model.identity import active_hooks

REQUESTS = (EditRequest("Miles Davis plays the {}", "trumpet", " Paris", " France"),
            EditRequest("The Eiffel Tower is located in {}", "Europe", " Japan"))
TEMPLATES = ("{}",)
EDITORS = {  # name: (method, hyperparameters with few steps and C = I)
    "rome": ("rome", RomeHparams(layer=1, v_num_grad_steps=2, mom2_adjustment=False)),
    "top": ("top", TopHparams(layers=(1,), rel_feat_layer=1, v_num_grad_steps1=2, v_num_grad_steps2=2,
                              mom2_adjustment=False)),
    "top-multi": ("top", TopHparams(layers=(1, 2), rel_feat_layer=1, v_num_grad_steps1=2, v_num_grad_steps2=2,
                                    mom2_adjustment=False)),
    "rets": ("rets", RetsHparams(layer=2, v_num_grad_steps=2, mom2_adjustment=False)),
    "memit": ("memit", MemitHparams(layers=(1, 2), v_num_grad_steps=2, mom2_adjustment=False,
                                    mom2_update_weight=1.0)),
}
MODELS = [m for m in ("tiny_hooked", "tiny_bridge_llama") if m in TINY_MODELS]
POINTS = {
    "stage": [(value_module, "optimize")],
    "step": [(optimize_module, "_clamp")],
    "fold": [(fold_module, "rank_one_fold"), (memit_module, "solve_update")],
    "covariance": [(covariance_module, "key_second_moment")],
    "write": [(ModelAdapter, "w_out")],
}
SMALL_CORPUS = ("Paris is the capital of France.", "Miles Davis plays the trumpet.", "Toyota is in Japan.")


class Injector:
    """Counts the calls at every injection point; raises ``exception`` at call ``at`` of ``point``."""

    def __init__(self, point: str | None = None, at: int = 0, exception: BaseException | None = None):
        self.point, self.at, self.exception = point, at, exception
        self.counts: Counter[str] = Counter()

    def install(self, monkeypatch) -> None:
        for point, targets in POINTS.items():
            for owner, name in targets:
                monkeypatch.setattr(owner, name, self._wrap(point, getattr(owner, name)))

    def _wrap(self, point: str, original):
        def wrapper(*args, **kwargs):
            if point == "write" and not _called_from_add():
                return original(*args, **kwargs)
            self.counts[point] += 1
            if point == self.point and self.counts[point] == self.at:
                raise self.exception
            if point == "covariance":  # the real statistic, over a corpus small enough to be quick
                return original(*args[:2], corpus=SMALL_CORPUS)
            return original(*args, **kwargs)
        return wrapper


def _called_from_add() -> bool:
    caller = sys._getframe(2).f_code  # wrapper <- EditHandle._add_one (a layer's write in EditHandle.add)
    return caller.co_name == "_add_one" and caller.co_filename == edits_module.__file__


def _run(model, editor: str, operation: str, hp):
    method, _ = EDITORS[editor]
    run = getattr(get_editor(method), operation)
    return run(model, REQUESTS, hp, templates=TEMPLATES)


def _hparams(editor: str, point: str):
    hp = EDITORS[editor][1]
    return hp.replace(mom2_adjustment=True) if point == "covariance" else hp


_COUNTS: dict[tuple, Counter] = {}


def _clean_counts(monkeypatch, model_name: str, model, editor: str, operation: str, mom2: bool) -> Counter:
    """How often each point is reached in a clean run (computed once; the undo of the clean apply
    is part of the run)."""
    key = (model_name, editor, operation, mom2)
    if key not in _COUNTS:
        injector = Injector()
        with monkeypatch.context() as patch:
            injector.install(patch)
            result = _run(model, editor, operation, _hparams(editor, "covariance" if mom2 else "stage"))
            if operation == "apply":
                result.revert()
        _COUNTS[key] = injector.counts
    return _COUNTS[key]


@pytest.fixture
def model(request, model_name):
    """The tiny model named ``model_name``; put back as it was after the test, so that a failing
    test does not leave its fault in the session's model for the tests after it."""
    model = request.getfixturevalue(model_name)
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    weights = param_hash(model)
    yield model
    if param_hash(model) != weights:
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.copy_(saved[k])
    if any(edits_module._HOLDERS.get(model, {}).values()):
        edits_module._HOLDERS.pop(model)  # handles the fault left holding a layer


def _state(model):
    holders = edits_module._HOLDERS.get(model, {})
    return (param_hash(model), [p.requires_grad for p in model.parameters()], active_hooks(model),
            sorted(layer for layer, handles in holders.items() if handles))


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("operation", ["compute", "apply"])
@pytest.mark.parametrize("editor", list(EDITORS))
@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize("which", ["first", "last"])
@pytest.mark.parametrize("exception", [KeyboardInterrupt, RuntimeError])
def test_a_fault_at_any_stage_leaves_every_parameter_bit_identical(
        monkeypatch, model_name, model, operation, editor, point, which, exception):
    counts = _clean_counts(monkeypatch, model_name, model, editor, operation, point == "covariance")
    assert counts[point] >= 1, f"{editor} {operation} never reaches {point}"
    before = _state(model)
    injector = Injector(point, 1 if which == "first" else counts[point], exception(f"injected at {point}"))
    injector.install(monkeypatch)
    with pytest.raises(exception, match=f"injected at {point}"):
        _run(model, editor, operation, _hparams(editor, point))
    assert injector.counts[point] == injector.at
    assert _state(model) == before


# ------------------------------------------------------------------------ non-finite edits
def _poisoned_optimize(original, at: int):
    """The real loop, after which δ is NaN, in the ``at``-th stage of the run only."""
    calls = []

    def optimize(objective, delta, settings, callback=None):
        trace = original(objective, delta, settings, callback)
        calls.append(settings.desc)
        if len(calls) == at:
            with torch.no_grad():
                delta.fill_(float("nan"))
        return trace
    return optimize


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("editor", list(EDITORS))
@pytest.mark.parametrize("which", ["first", "second", "last"])
def test_a_non_finite_value_is_refused_and_changes_nothing(monkeypatch, model_name, model, editor, which):
    """v* (or h*_r, or MEMIT's z) becomes NaN after an optimization whose loss stayed finite: the
    next stage's guard or the write refuses it (FloatingPointError), and whatever was applied
    before (an earlier request, TOP's or MEMIT's earlier layer) is taken out again. The second
    stage is TOP's stage 2 (its v* is written before the next layer's stages) or the second request."""
    stages = _clean_counts(monkeypatch, model_name, model, editor, "apply", False)["stage"]
    at = {"first": 1, "second": 2, "last": stages}[which]
    before = _state(model)
    monkeypatch.setattr(value_module, "optimize", _poisoned_optimize(value_module.optimize, at))
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        _run(model, editor, "apply", EDITORS[editor][1])
    assert _state(model) == before


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("editor", list(EDITORS))
def test_a_non_finite_forward_pass_is_refused_and_changes_nothing(model_name, model, editor):
    """NaN in the model's own forward pass (a user's hook): the loop's guard stops the edit."""
    before = _state(model)
    poison = (hook_name("resid_post", 3), lambda act, hook: act * float("nan"))
    with model.hooks(fwd_hooks=[poison]):
        with pytest.raises(FloatingPointError, match="NaN or inf.*no weight was changed"):
            _run(model, editor, "apply", EDITORS[editor][1])
    assert _state(model) == before

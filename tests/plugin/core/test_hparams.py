"""Every editor's hyperparameters: fields coerced to their types, booleans that are booleans,
context lengths of the right shape, and floats that are finite and in range."""

import json

import numpy as np
import pytest
import torch

from toplens.core.hparams import HparamsError
from toplens.core.optimize import LoopSettings, LossTerms, NonFiniteLossError, optimize
from toplens.editors.memit import MemitHparams
from toplens.editors.rets import RetsHparams
from toplens.editors.rome import RomeHparams
from toplens.editors.top import TopHparams

from tests.conftest import unchecked

CLASSES = {"rome": RomeHparams, "top": TopHparams, "rets": RetsHparams, "memit": MemitHparams}
STEPS = {"rome": "v_num_grad_steps", "top": "v_num_grad_steps1", "rets": "v_num_grad_steps",
         "memit": "v_num_grad_steps"}


@pytest.mark.parametrize("method", CLASSES)
def test_integral_floats_are_step_counts_and_others_are_refused(method):
    cls, field = CLASSES[method], STEPS[method]
    hp = cls.from_json(json.dumps({field: 20.0}))
    assert getattr(hp, field) == 20 and type(getattr(hp, field)) is int
    assert cls().replace(**{field: np.int64(7)}).to_dict()[field] == 7
    with pytest.raises(HparamsError, match=rf"{cls.__name__}\.{field} must be an integer; got 20\.5"):
        cls().replace(**{field: 20.5})
    with pytest.raises(HparamsError, match=rf"{cls.__name__}\.{field} must be an integer; got True"):
        cls().replace(**{field: True})


@pytest.mark.parametrize("method", CLASSES)
def test_numpy_integers_are_layer_indices(method):
    cls = CLASSES[method]
    field = cls.layers_field
    value = np.int64(2) if field == "layer" else [np.int64(1), np.int64(2)]
    hp = cls().replace(**{field: value})
    assert hp.edit_layers in ((2,), (1, 2)) and all(type(x) is int for x in hp.edit_layers)
    json.dumps(hp.to_dict())  # still plain JSON


@pytest.mark.parametrize("method", CLASSES)
@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_booleans_must_be_booleans(method, value):
    cls = CLASSES[method]
    with pytest.raises(HparamsError, match=rf"{cls.__name__}\.mom2_adjustment must be true or false; got {value!r}"):
        cls().replace(mom2_adjustment=value)
    assert cls().replace(mom2_adjustment=False).mom2_adjustment is False


@pytest.mark.parametrize("method", CLASSES)
@pytest.mark.parametrize("value, message", [
    ([[0, 5]], r"context_lengths must be \[count, tokens\] pairs of positive integers; got \(\(0, 5\),\)"),
    ([[3, -1]], r"context_lengths must be \[count, tokens\] pairs"),
    ([[3]], r"context_lengths\[0\] must hold 2 items; got \[3\]"),
    ([[3, 4, 5]], r"context_lengths\[0\] must hold 2 items"),
    ([[3, 2.5]], r"context_lengths\[0\]\[1\] must be an integer; got 2\.5"),
    (5, r"context_lengths must be a list; got 5"),
])
def test_context_lengths_are_checked(method, value, message):
    cls = CLASSES[method]
    with pytest.raises(HparamsError, match=rf"{cls.__name__}\.{message}"):
        cls().replace(context_lengths=value)
    assert cls().replace(context_lengths=[[2, 3.0]]).context_lengths == ((2, 3),)
    assert cls().replace(context_lengths=[]).context_lengths == ()


@pytest.mark.parametrize("method", CLASSES)
@pytest.mark.parametrize("field, value", [("v_lr", 1e30), ("v_lr", float("inf")), ("kl_factor", 1e300),
                                          ("clamp_norm_factor", 1e7), ("v_weight_decay", float("-inf"))])
def test_floats_must_be_finite_and_in_range(method, field, value):
    cls = CLASSES[method]
    with pytest.raises(HparamsError, match=rf"{cls.__name__}\.{field} must be a finite"):
        cls().replace(**{field: value})


@pytest.mark.parametrize("method", CLASSES)
def test_numbers_of_any_kind_are_floats(method):
    hp = CLASSES[method]().replace(v_lr=np.float32(0.25), kl_factor=1)
    assert type(hp.v_lr) is float and hp.v_lr == 0.25 and type(hp.kl_factor) is float
    with pytest.raises(HparamsError, match=r"\.v_lr must be a number; got '0\.5'"):
        CLASSES[method]().replace(v_lr="0.5")


def test_direct_construction_is_coerced_as_well():
    """Outside pytest's run-time type checks the dataclass coerces what it is given."""
    with unchecked():
        hp = RomeHparams(layer=np.int64(3), v_num_grad_steps=12.0, context_lengths=[[1, 2]])
        assert (hp.layer, hp.v_num_grad_steps, hp.context_lengths) == (3, 12, ((1, 2),))
        with pytest.raises(HparamsError, match="RomeHparams.mom2_adjustment must be true or false"):
            RomeHparams(mom2_adjustment="false")
        with pytest.raises(HparamsError, match="TopHparams.v_lr2 must be a finite number"):
            TopHparams(v_lr2=1e30)


def test_with_steps_takes_an_integral_float():
    with unchecked():
        assert RomeHparams().with_steps(4.0).v_num_grad_steps == 4
        with pytest.raises(HparamsError, match="steps must be an integer; got 4.5"):
            TopHparams().with_steps(4.5)


def test_an_overflowing_norm_in_the_clamp_raises_instead_of_zeroing_delta():
    """Adam with lr 1e30 makes δ's entries ~1e30: their squares overflow float32, so ‖δ‖ is inf and
    scaling by max_norm / ‖δ‖ would set δ to zero without a word."""
    target = torch.tensor([1.0, -2.0, 0.5])
    delta = torch.zeros(3)
    objective = lambda d: LossTerms(((d - target) ** 2).sum())  # noqa: E731
    with pytest.raises(NonFiniteLossError, match=r"stage: the norm of δ overflowed to inf after step 0"):
        optimize(objective, delta, LoopSettings(steps=5, lr=1e30, max_norm=2.0, stop_below=0.0, desc="stage"))
    assert isinstance(NonFiniteLossError("x"), FloatingPointError)
    fine = torch.zeros(3)
    optimize(objective, fine, LoopSettings(steps=5, lr=1.0, max_norm=0.5, stop_below=0.0))
    assert 0.49 < float(fine.norm()) <= 0.5 + 1e-6

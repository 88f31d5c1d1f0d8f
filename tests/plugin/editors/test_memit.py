import math

import pytest
import torch

from tests.conftest import param_hash

from toplens import EditRequest, ModelAdapter, WeightEdit, apply_edit
from toplens.editors import memit
from toplens.editors.memit import MemitHparams, solve_update
from toplens.core.hparams import HparamsError
from toplens.core.scoring import target_probability

# Subjects last in the prompt: in random tiny models only the last token's value reaches the
# prediction directly (see test_rome.py).
REQUESTS = (
    EditRequest("Miles Davis plays the {}", "trumpet", " Paris"),
    EditRequest("The Eiffel Tower is located in {}", "Europe", " Japan"),
    EditRequest("Toyota is headquartered in {}", "Japan", " French"),
)
FAST = MemitHparams(layers=(1, 2), v_num_grad_steps=10, mom2_adjustment=False, mom2_update_weight=0.5,
                    context_lengths=((3, 4),))


def _objective(keys, residuals, cov, weight, delta):
    return ((keys @ delta - residuals) ** 2).sum() + weight * torch.trace(delta.T @ cov @ delta)


def test_solve_update_minimizes_the_memit_objective():
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(5, 16, generator=gen, dtype=torch.float64)
    residuals = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    half = torch.randn(16, 16, generator=gen, dtype=torch.float64)
    cov = half @ half.T / 16 + 0.1 * torch.eye(16, dtype=torch.float64)
    u, v = solve_update(keys, residuals, cov, 0.7)
    assert u.shape == (16, 5) and v.shape == (5, 8)  # rank at most the number of requests
    delta = u @ v
    gradient = keys.T @ (keys @ delta - residuals) + 0.7 * cov @ delta
    assert float(gradient.abs().max()) < 1e-10
    best = _objective(keys, residuals, cov, 0.7, delta)
    for _ in range(5):
        nudge = 1e-3 * torch.randn(16, 8, generator=gen, dtype=torch.float64)
        assert _objective(keys, residuals, cov, 0.7, delta + nudge) > best


def test_solve_update_with_identity_and_small_weight_writes_the_residuals():
    gen = torch.Generator().manual_seed(1)
    keys = torch.randn(3, 32, generator=gen, dtype=torch.float64)
    residuals = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    u, v = solve_update(keys, residuals, None, 1e-8)
    torch.testing.assert_close(keys @ u @ v, residuals, atol=1e-6, rtol=1e-6)
    assert all(f.dtype == torch.float32 for f in solve_update(keys.float(), residuals.float(), None, 1.0))


def test_compute_leaves_model_unchanged_and_edits_three_facts_at_once(tiny_model):
    weights = param_hash(tiny_model)
    before = [target_probability(tiny_model, r.text, r.target_new) for r in REQUESTS]
    edit = memit.compute(tiny_model, REQUESTS, FAST)
    assert param_hash(tiny_model) == weights
    assert edit.method == "memit" and edit.layers == (1, 2) and edit.requests == REQUESTS
    summary = edit.details.summary()
    assert summary["n_requests"] == 3 and summary["remaining_after"] < summary["layers"][0]["remaining"]
    handle = apply_edit(tiny_model, edit)
    after = [target_probability(tiny_model, r.text, r.target_new) for r in REQUESTS]
    handle.revert()
    assert param_hash(tiny_model) == weights
    for b, a in zip(before, after):
        assert math.log(a) > math.log(b) + 0.5


def test_apply_one_request_and_save_round_trip(tiny_hooked, tmp_path):
    weights = param_hash(tiny_hooked)
    with memit.apply(tiny_hooked, REQUESTS[0], FAST) as handle:
        edit = handle.edits[0]
        assert param_hash(tiny_hooked) != weights
    assert param_hash(tiny_hooked) == weights
    loaded = WeightEdit.load(edit.save(tmp_path / "memit.safetensors"))
    assert loaded.method == "memit" and loaded.layers == (1, 2)
    assert all(torch.equal(a.delta, b.delta) for a, b in zip(loaded.deltas, edit.deltas))


def test_second_moments_come_from_the_unedited_model(tiny_hooked, monkeypatch):
    fingerprint = ModelAdapter(tiny_hooked).fingerprint()
    seen = []

    original = memit.fold_covariance

    def spy(adapter, layer, mom2, covariance):
        seen.append((layer, adapter.fingerprint()))
        return original(adapter, layer, mom2, covariance)

    monkeypatch.setattr(memit, "fold_covariance", spy)
    edit = memit.compute(tiny_hooked, REQUESTS[:2], FAST.replace(mom2_adjustment=True, mom2_update_weight=5.0,
                                                                  v_num_grad_steps=2))
    assert seen == [(1, fingerprint), (2, fingerprint)]
    assert all(bool(torch.isfinite(d.delta).all()) for d in edit.deltas)


def test_bad_input_changes_nothing(tiny_hooked):
    weights = param_hash(tiny_hooked)
    with pytest.raises(ValueError, match="MemitHparams.layers=9"):
        memit.compute(tiny_hooked, REQUESTS, FAST.replace(layers=(1, 9)))
    with pytest.raises(ValueError, match="at least one EditRequest"):
        memit.compute(tiny_hooked, [], FAST)
    assert param_hash(tiny_hooked) == weights


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"layers": (3, 2)}, "MemitHparams.layers must be strictly increasing"),
        ({"layers": ()}, "MemitHparams.layers must be non-negative"),
        ({"mom2_update_weight": 0.0}, "MemitHparams.mom2_update_weight must be a finite positive"),
        ({"clamp_norm_factor": math.inf}, "MemitHparams.clamp_norm_factor"),
        ({"kl_prompt": "is a"}, "MemitHparams.kl_prompt"),
    ],
)
def test_bad_hparams_name_the_field(changes, message):
    with pytest.raises(HparamsError, match=message):
        FAST.replace(**changes)


def test_hparams_json_round_trip():
    assert MemitHparams.from_json(FAST.to_json()) == FAST
    with pytest.raises(HparamsError, match="MemitHparams has no field"):
        MemitHparams.from_dict({"layer": 3})

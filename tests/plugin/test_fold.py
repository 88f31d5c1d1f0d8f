import pytest
import torch

from toplens import EditRequest, LayerDelta, ModelAdapter, WeightEdit, apply_edit
from toplens.core.fold import rank_one_delta


def test_rank_one_delta_maps_key_to_target():
    torch.manual_seed(0)
    W, key, u = torch.randn(16, 8), torch.randn(16), torch.randn(16)
    v_star = torch.randn(8)
    delta = rank_one_delta(u, key, v_star, key @ W)
    torch.testing.assert_close(key @ (W + delta), v_star, atol=1e-5, rtol=1e-5)
    assert torch.linalg.matrix_rank(delta) == 1


def _edit(adapter, layers=(1, 2), scale=0.1):
    torch.manual_seed(1)
    req = EditRequest("{} is the capital of", "Paris", " Italy")
    deltas = tuple(LayerDelta(l, scale * torch.randn(adapter.d_mlp, adapter.d_model)) for l in layers)
    return WeightEdit("rome", (req,), deltas, {"layer": 1})


def test_apply_and_revert_bit_exact(tiny_model):
    adapter = ModelAdapter(tiny_model)
    originals = [adapter.w_out(l).detach().clone() for l in range(adapter.n_layers)]
    edit = _edit(adapter)
    with apply_edit(tiny_model, edit) as handle:
        assert handle.applied
        assert not torch.equal(adapter.w_out(1), originals[1])
        handle.add(_edit(adapter, layers=(1,)))  # stacked edits on one handle
    for layer, original in enumerate(originals):
        assert torch.equal(adapter.w_out(layer), original)


def test_bad_delta_changes_nothing(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    before = adapter.w_out(1).detach().clone()
    bad = WeightEdit("rome", (), (LayerDelta(1, torch.ones(adapter.d_mlp, adapter.d_model)),
                                  LayerDelta(2, torch.full((adapter.d_mlp, adapter.d_model), float("nan")))))
    with pytest.raises(FloatingPointError, match="layer 2 has NaN"):
        apply_edit(tiny_hooked, bad)
    assert torch.equal(adapter.w_out(1), before)
    with pytest.raises(ValueError, match="delta.layer=9"):
        apply_edit(tiny_hooked, WeightEdit("rome", (), (LayerDelta(9, torch.zeros(1)),)))


def test_save_load_round_trip(tmp_path, tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    edit = _edit(adapter)
    path = edit.save(tmp_path / "edit.safetensors")
    loaded = WeightEdit.load(path)
    assert loaded.method == "rome" and loaded.requests == edit.requests and loaded.hparams == {"layer": 1}
    for a, b in zip(edit.deltas, loaded.deltas):
        assert a.layer == b.layer and torch.equal(a.delta, b.delta)
    assert b"pickle" not in path.read_bytes()[:64]

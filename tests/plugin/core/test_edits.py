import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from toplens import EditRequest, LayerDelta, ModelAdapter, WeightEdit, apply_edit

REQUEST = EditRequest("{} is the capital of", "Paris", " Italy")


def _edit(adapter, layers=(1, 2), scale=0.1, rank=1):
    gen = torch.Generator().manual_seed(1)
    deltas = tuple(LayerDelta(l, scale * torch.randn(adapter.d_mlp, rank, generator=gen),
                              torch.randn(rank, adapter.d_model, generator=gen)) for l in layers)
    return WeightEdit("rome", (REQUEST,), deltas, {"layer": 1})


def test_apply_and_revert_bit_exact(tiny_model):
    adapter = ModelAdapter(tiny_model)
    originals = [adapter.w_out(l).detach().clone() for l in range(adapter.n_layers)]
    edit = _edit(adapter)
    with apply_edit(tiny_model, edit) as handle:
        assert handle.applied
        torch.testing.assert_close(adapter.w_out(1) - originals[1], edit.deltas[0].delta)
        handle.add(_edit(adapter, layers=(1,), rank=3))  # stacked edits on one handle
    for layer, original in enumerate(originals):
        assert torch.equal(adapter.w_out(layer), original)


def test_low_rank_factors_and_their_product():
    u, v = torch.randn(6, 1), torch.randn(1, 4)
    d = LayerDelta.rank_one(3, u[:, 0], v[0])
    assert d.rank == 1 and d.delta.shape == (6, 4)
    assert torch.equal(d.delta, torch.outer(u[:, 0].double(), v[0].double()).float())
    with pytest.raises((ValueError, TypeError)):  # TypeError: the shape check under pytest
        LayerDelta(0, torch.randn(6, 2), torch.randn(1, 4))


def test_merge_puts_factors_of_one_layer_side_by_side():
    a = LayerDelta(1, torch.randn(6, 1), torch.randn(1, 4))
    b = LayerDelta(1, torch.randn(6, 2), torch.randn(2, 4))
    c = LayerDelta(0, torch.randn(6, 1), torch.randn(1, 4))
    merged = LayerDelta.merge([a, b, c])
    assert [m.layer for m in merged] == [0, 1] and merged[1].rank == 3
    torch.testing.assert_close(merged[1].delta, a.delta + b.delta)


def test_bad_delta_changes_nothing(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    before = adapter.w_out(1).detach().clone()
    nan = torch.full((1, adapter.d_model), float("nan"))
    bad = WeightEdit("rome", (), (LayerDelta(1, torch.ones(adapter.d_mlp, 1), torch.ones(1, adapter.d_model)),
                                  LayerDelta(2, torch.ones(adapter.d_mlp, 1), nan)))
    with pytest.raises(FloatingPointError, match="layer 2 has NaN"):
        apply_edit(tiny_hooked, bad)
    assert torch.equal(adapter.w_out(1), before)
    with pytest.raises(ValueError, match="delta.layer=9"):
        apply_edit(tiny_hooked, WeightEdit("rome", (), (LayerDelta(9, torch.zeros(1, 1), torch.zeros(1, 1)),)))


def test_save_load_round_trip_keeps_the_factors(tmp_path, tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    edit = _edit(adapter, rank=2)
    path = edit.save(tmp_path / "edit.safetensors")
    loaded = WeightEdit.load(path)
    assert loaded.method == "rome" and loaded.requests == edit.requests and loaded.hparams == {"layer": 1}
    for a, b in zip(edit.deltas, loaded.deltas):
        assert a.layer == b.layer and torch.equal(a.u, b.u) and torch.equal(a.v, b.v)
    # the file holds the factors, not ΔW: (d_mlp + d_model) · rank floats per layer
    floats = sum((adapter.d_mlp + adapter.d_model) * 2 for _ in edit.deltas)
    assert path.stat().st_size < 4 * floats + 4096
    with safe_open(str(path), framework="pt") as handle:
        assert sorted(handle.keys()) == ["u.0", "u.1", "v.0", "v.1"]


def test_an_unknown_file_format_is_a_one_line_error(tmp_path):
    meta = '{"method": "rome", "requests": [], "layers": [2], "hparams": {}, "format": "toplens-edit/9"}'
    save_file({"u.0": torch.zeros(2, 1)}, str(tmp_path / "new.safetensors"), metadata={"toplens": meta})
    with pytest.raises(ValueError, match="toplens-edit/9"):
        WeightEdit.load(tmp_path / "new.safetensors")


def test_shapes_are_checked_at_run_time_under_pytest():
    """The jaxtyping annotations are live in the tests: mismatched factor shapes fail the check."""
    from jaxtyping import TypeCheckError
    from toplens.core.fold import rank_one_fold

    with pytest.raises(TypeCheckError):
        rank_one_fold(0, torch.zeros(3), torch.zeros(4), torch.zeros(5))


def test_dense_files_of_the_first_format_still_load(tmp_path):
    dense = torch.randn(6, 4)
    meta = '{"method": "rome", "requests": [], "layers": [2], "hparams": {}, "format": "toplens-edit/1"}'
    save_file({"delta.0": dense}, str(tmp_path / "old.safetensors"), metadata={"toplens": meta})
    (delta,) = WeightEdit.load(tmp_path / "old.safetensors").deltas
    assert delta.layer == 2 and torch.equal(delta.delta, dense)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_handles_revert_in_any_order(tiny_model, order):
    """Two handles on one layer: reverting the older first leaves the newer edit alone; either
    order ends at the original weights bit for bit."""
    adapter = ModelAdapter(tiny_model)
    original = adapter.w_out(1).detach().clone()
    e1, e2 = _edit(adapter, layers=(1,)), _edit(adapter, layers=(1,), scale=0.3, rank=2)
    handles = [apply_edit(tiny_model, e1), apply_edit(tiny_model, e2)]
    handles[order[0]].revert()
    left = (e1, e2)[order[1]]
    torch.testing.assert_close(adapter.w_out(1) - original, left.deltas[0].delta, atol=1e-5, rtol=1e-4)
    handles[order[1]].revert()
    assert torch.equal(adapter.w_out(1), original)
    handles[order[0]].revert()  # idempotent
    assert torch.equal(adapter.w_out(1), original)


def test_an_interrupt_in_a_sequential_apply_reverts_everything(tiny_hooked):
    """Ctrl-C while the second request is computed: the first edit is taken out again."""
    from toplens.core.edits import apply_sequentially

    adapter = ModelAdapter(tiny_hooked)
    saved = [adapter.w_out(l).detach().clone() for l in range(adapter.n_layers)]
    calls = []

    def compute(model, request, hparams):
        calls.append(request)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _edit(adapter, layers=(1, 2))

    with pytest.raises(KeyboardInterrupt):
        apply_sequentially(compute, tiny_hooked, [REQUEST, REQUEST], None)
    assert len(calls) == 2
    assert all(torch.equal(adapter.w_out(l), s) for l, s in enumerate(saved))

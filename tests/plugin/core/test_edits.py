import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.conftest import param_hash, unchecked

from toplens import EditRequest, LayerDelta, ModelAdapter, WeightEdit, apply_edit

REQUEST = EditRequest("{} is the capital of", "Paris", " Italy")


def _edit(adapter, layers=(1, 2), scale=0.1, rank=1):
    gen = torch.Generator().manual_seed(1)
    deltas = tuple(LayerDelta(l, scale * torch.randn(adapter.d_mlp, rank, generator=gen),
                              torch.randn(rank, adapter.d_model, generator=gen)) for l in layers)
    return WeightEdit("rome", (REQUEST,), deltas, {"layer": 1})


def test_apply_and_revert_bit_exact(tiny_model):
    adapter = ModelAdapter(tiny_model)
    weights = param_hash(tiny_model)
    original = adapter.w_out(1).detach().clone()
    edit = _edit(adapter)
    with apply_edit(tiny_model, edit) as handle:
        assert handle.applied
        torch.testing.assert_close(adapter.w_out(1) - original, edit.deltas[0].delta)
        handle.add(_edit(adapter, layers=(1,), rank=3))  # stacked edits on one handle
    assert param_hash(tiny_model) == weights


def test_low_rank_factors_and_their_product():
    u, v = torch.randn(6, 1), torch.randn(1, 4)
    d = LayerDelta.rank_one(3, u[:, 0], v[0])
    assert d.rank == 1 and d.delta.shape == (6, 4)
    assert torch.equal(d.delta, torch.outer(u[:, 0].double(), v[0].double()).float())
    with unchecked(), pytest.raises(ValueError, match=r"LayerDelta factors must be \[d_mlp, r\] and \[r, d_model\]; "
                                                   r"got \(6, 2\) and \(1, 4\)"):
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
    weights = param_hash(tiny_hooked)
    nan = torch.full((1, adapter.d_model), float("nan"))
    bad = WeightEdit("rome", (), (LayerDelta(1, torch.ones(adapter.d_mlp, 1), torch.ones(1, adapter.d_model)),
                                  LayerDelta(2, torch.ones(adapter.d_mlp, 1), nan)))
    with pytest.raises(FloatingPointError, match="layer 2 has NaN"):
        apply_edit(tiny_hooked, bad)
    assert param_hash(tiny_hooked) == weights
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
    with safe_open(str(path), framework="pt") as handle:  # a plain safetensors file: factors + JSON
        assert sorted(handle.keys()) == ["u.0", "u.1", "v.0", "v.1"]
        for i, d in enumerate(edit.deltas):
            for name, factor in (("u", d.u), ("v", d.v)):
                stored = handle.get_tensor(f"{name}.{i}")
                assert stored.shape == factor.shape and stored.dtype == factor.dtype == torch.float32
        metadata = handle.metadata()
    assert set(metadata) == {"toplens"}
    meta = json.loads(metadata["toplens"])
    assert set(meta) == {"format", "method", "model", "requests", "layers", "hparams"}
    assert (meta["method"], meta["layers"], meta["hparams"]) == ("rome", [1, 2], {"layer": 1})
    assert meta["requests"] == [REQUEST.to_dict()] and meta["model"] is None


def test_an_unknown_file_format_is_a_one_line_error(tmp_path):
    meta = '{"method": "rome", "requests": [], "layers": [2], "hparams": {}, "format": "toplens-edit/9"}'
    save_file({"u.0": torch.zeros(2, 1)}, str(tmp_path / "new.safetensors"), metadata={"toplens": meta})
    with pytest.raises(ValueError, match="toplens-edit/9"):
        WeightEdit.load(tmp_path / "new.safetensors")


def test_shapes_are_checked_at_run_time_under_pytest():
    """The jaxtyping annotations are live in the tests: mismatched factor shapes fail the check."""
    from jaxtyping import TypeCheckError
    from toplens.core.fold import rank_one_fold

    with pytest.raises(TypeCheckError, match=r"rank_one_fold[\s\S]*parameter 'u'"):
        rank_one_fold(0, torch.zeros(3), torch.zeros(4), torch.zeros(5))


def test_dense_files_of_the_first_format_still_load(tmp_path):
    dense = torch.randn(6, 4)
    meta = json.dumps({"method": "rome", "requests": [REQUEST.to_dict()], "layers": [2], "hparams": {},
                       "format": "toplens-edit/1"})
    save_file({"delta.0": dense}, str(tmp_path / "old.safetensors"), metadata={"toplens": meta})
    (delta,) = WeightEdit.load(tmp_path / "old.safetensors").deltas
    assert delta.layer == 2 and torch.equal(delta.delta, dense)


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_handles_revert_in_any_order(tiny_model, order):
    """Two handles on one layer: reverting the older first leaves the newer edit alone; either
    order ends at the original weights bit for bit."""
    adapter = ModelAdapter(tiny_model)
    weights = param_hash(tiny_model)
    original = adapter.w_out(1).detach().clone()
    e1, e2 = _edit(adapter, layers=(1,)), _edit(adapter, layers=(1,), scale=0.3, rank=2)
    handles = [apply_edit(tiny_model, e1), apply_edit(tiny_model, e2)]
    handles[order[0]].revert()
    left = (e1, e2)[order[1]]
    torch.testing.assert_close(adapter.w_out(1) - original, left.deltas[0].delta, atol=1e-5, rtol=1e-4)
    handles[order[1]].revert()
    assert param_hash(tiny_model) == weights
    handles[order[0]].revert()  # idempotent
    assert param_hash(tiny_model) == weights


def test_an_interrupt_in_a_sequential_apply_reverts_everything(tiny_hooked):
    """Ctrl-C while the second request is computed: the first edit is taken out again."""
    from toplens.core.edits import apply_sequentially

    adapter = ModelAdapter(tiny_hooked)
    weights = param_hash(tiny_hooked)
    calls = []

    def compute(model, request, hparams):
        calls.append(request)
        if len(calls) == 2:
            raise KeyboardInterrupt("injected")
        return _edit(adapter, layers=(1, 2))

    with pytest.raises(KeyboardInterrupt, match="injected"):
        apply_sequentially(compute, tiny_hooked, [REQUEST, REQUEST], None)
    assert len(calls) == 2
    assert param_hash(tiny_hooked) == weights


# ----------------------------------------------------------------- edits tied to their model
def _tied(adapter, **kw):
    from dataclasses import replace

    from toplens.model.identity import weights_digest

    return replace(_edit(adapter, **kw), model_digest=weights_digest(adapter))


def _other_model(model):
    """Scale one attention weight in place (a same-shape model with other weights); returns undo."""
    weight = next(model.blocks[0].attn.parameters())
    original = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(1.5)

    def undo():
        with torch.no_grad():
            weight.copy_(original)
    return undo


def test_an_edit_computed_on_another_model_is_refused_unless_forced(tiny_model, tmp_path):
    adapter = ModelAdapter(tiny_model)
    edit = WeightEdit.load(_tied(adapter, layers=(1,)).save(tmp_path / "e.safetensors"))
    assert edit.model_digest is not None
    undo = _other_model(tiny_model)
    try:
        before = adapter.w_out(1).detach().clone()
        with pytest.raises(ValueError, match=f"weights hash {edit.model_digest}.*force=True"):
            apply_edit(tiny_model, edit)
        assert torch.equal(adapter.w_out(1), before)
        with apply_edit(tiny_model, edit, force=True):
            assert not torch.equal(adapter.w_out(1), before)
        assert torch.equal(adapter.w_out(1), before)
    finally:
        undo()
    with apply_edit(tiny_model, edit):  # the model it was computed on takes it
        pass


def test_computed_edits_record_the_model_they_were_computed_on(tiny_hooked):
    from toplens import rome
    from toplens.editors.presets import get_preset
    from toplens.model.identity import weights_digest

    hp = get_preset("rome", "gpt2").replace(layer=1).with_steps(2)
    edit = rome.compute(tiny_hooked, REQUEST, hp)
    assert edit.model_digest == weights_digest(ModelAdapter(tiny_hooked))


def _write_meta(path, meta, tensors=None):
    import json

    tensors = {"u.0": torch.zeros(64, 1), "v.0": torch.zeros(1, 32)} if tensors is None else tensors
    save_file(tensors, str(path), metadata={"toplens": meta if isinstance(meta, str) else json.dumps(meta)})
    return path


GOOD = {"format": "toplens-edit/3", "method": "rome", "model": None, "layers": [1], "hparams": {},
        "requests": [REQUEST.to_dict()]}


@pytest.mark.parametrize("change, message", [
    ({"layers": []}, "field 'layers' must be a non-empty list"),
    ({"layers": [1, 1]}, "field 'layers' must be a non-empty list of distinct"),
    ({"layers": ["1"]}, "field 'layers'"),
    ({"format": "toplens-edit/9"}, "edit format 'toplens-edit/9' is not one"),
    ({"format": None}, "edit format None"),
    ({"method": "frobnicate"}, "field 'method' must be one of .*'frobnicate'"),
    ({"requests": []}, "field 'requests' must be a non-empty list"),
    ({"requests": [{"prompt": "{} is"}]}, r"requests\[0\]"),
    ({"requests": [7]}, r"requests\[0\] must be an object"),
    ({"hparams": [1]}, "field 'hparams' must be an object"),
    ({"model": 5}, "field 'model' must be the model's hash"),
])
def test_malformed_metadata_is_an_error_naming_the_file_and_field(tmp_path, change, message):
    path = _write_meta(tmp_path / "bad.safetensors", {**GOOD, **change})
    with pytest.raises(ValueError, match=message) as err:
        WeightEdit.load(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


@pytest.mark.parametrize("case, message", [
    ("not json", "metadata is not JSON"),
    ("list", "must be a JSON object"),
    ("missing tensor", r"expected the tensors \['u.0', 'v.0'\]"),
    ("nan", "hold NaN or inf"),
    ("bad shapes", "LayerDelta factors must be"),
])
def test_malformed_contents_are_an_error_naming_the_file(tmp_path, case, message):
    from tests.conftest import unchecked

    path = tmp_path / "bad.safetensors"
    if case == "not json":
        _write_meta(path, "{nope")
    elif case == "list":
        _write_meta(path, "[1, 2]")
    elif case == "missing tensor":
        _write_meta(path, GOOD, {"u.0": torch.zeros(64, 1)})
    elif case == "nan":
        _write_meta(path, GOOD, {"u.0": torch.full((64, 1), float("nan")), "v.0": torch.zeros(1, 32)})
    else:
        _write_meta(path, GOOD, {"u.0": torch.zeros(64, 2), "v.0": torch.zeros(1, 32)})
    with unchecked(), pytest.raises(ValueError, match=message) as err:
        WeightEdit.load(path)
    assert str(err.value).startswith(str(path))


def test_a_file_that_is_not_an_edit_is_an_error_naming_it(tmp_path):
    for path in (tmp_path / "missing.safetensors", tmp_path / "text.safetensors"):
        if path.name == "text.safetensors":
            path.write_text("hello")
        with pytest.raises(ValueError, match="no such file|not a safetensors file") as err:
            WeightEdit.load(path)
        assert str(err.value).startswith(str(path))


def test_a_non_finite_edit_is_never_written(tmp_path, tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    nan = WeightEdit("rome", (REQUEST,), (LayerDelta(1, torch.ones(adapter.d_mlp, 1),
                                                     torch.full((1, adapter.d_model), float("inf"))),))
    with pytest.raises(FloatingPointError, match="layer-1 factor v has NaN or inf; not saved"):
        nan.save(tmp_path / "nan.safetensors")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="does not exist"):
        _edit(adapter).save(tmp_path / "no" / "such" / "e.safetensors")


@pytest.mark.parametrize("order", [(1, 0, 2), (1, 2, 0), (0, 2, 1), (2, 0, 1)])
def test_three_handles_on_one_layer_revert_in_any_order(tiny_model, order):
    from tests.conftest import param_hash

    adapter = ModelAdapter(tiny_model)
    start, original = param_hash(tiny_model), adapter.w_out(1).detach().clone()
    edits = [_edit(adapter, layers=(1,), scale=s, rank=r) for s, r in ((0.1, 1), (0.3, 2), (0.2, 1))]
    handles = [apply_edit(tiny_model, e) for e in edits]
    handles[order[0]].revert()
    left = [edits[i].deltas[0].delta for i in range(3) if i != order[0]]
    torch.testing.assert_close(adapter.w_out(1) - original, left[0] + left[1], atol=1e-5, rtol=1e-4)
    handles[order[1]].revert()
    torch.testing.assert_close(adapter.w_out(1) - original, edits[order[2]].deltas[0].delta, atol=1e-5, rtol=1e-4)
    handles[order[2]].revert()
    assert param_hash(tiny_model) == start


def test_adding_to_an_older_handle_under_a_newer_one_is_refused(tiny_hooked):
    from tests.conftest import param_hash

    adapter = ModelAdapter(tiny_hooked)
    start = param_hash(tiny_hooked)
    older = apply_edit(tiny_hooked, _edit(adapter, layers=(1,)))
    newer = apply_edit(tiny_hooked, _edit(adapter, layers=(1,), scale=0.2))
    during = param_hash(tiny_hooked)
    with pytest.raises(ValueError, match="a handle applied later also edits layer 1"):
        older.add(_edit(adapter, layers=(1,), scale=0.3))
    assert param_hash(tiny_hooked) == during
    older.add(_edit(adapter, layers=(2,), scale=0.3))  # a layer no later handle holds is fine
    newer.revert()
    older.revert()
    assert param_hash(tiny_hooked) == start


def test_a_revert_interrupted_between_layers_finishes_when_called_again(tiny_hooked, monkeypatch):
    from tests.conftest import param_hash
    from toplens.core.edits import EditHandle

    adapter = ModelAdapter(tiny_hooked)
    start = param_hash(tiny_hooked)
    handle = apply_edit(tiny_hooked, _edit(adapter, layers=(1, 2)))
    real, calls = EditHandle._revert_layer, []

    def interrupted(self, layer):
        calls.append(layer)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(self, layer)

    monkeypatch.setattr(EditHandle, "_revert_layer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        handle.revert()
    monkeypatch.setattr(EditHandle, "_revert_layer", real)
    handle.revert()
    assert param_hash(tiny_hooked) == start and not handle.applied

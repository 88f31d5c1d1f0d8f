"""The weights hash that keys the caches, and the active-hooks check."""

import contextlib

import torch

from toplens.model import ModelAdapter
from toplens.model.identity import active_hooks, weights_digest


@contextlib.contextmanager
def nudged(tensor):
    """Add 1e-3 to one entry of ``tensor`` in place, restored on exit."""
    with torch.no_grad():
        old = tensor.detach().clone()
        bump = torch.zeros(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
        bump[3] = 1e-3
        tensor.add_(bump.view(tensor.shape))
    try:
        yield
    finally:
        with torch.no_grad():
            tensor.copy_(old)


def _attention_weight(model, layer):
    return next(model.blocks[layer].attn.parameters())


def _mlp_input_weight(model, layer):
    """A parameter of the layer's MLP other than W_out (W_in or the gate)."""
    w_out = ModelAdapter(model).w_out(layer).untyped_storage().data_ptr()
    return next(p for p in model.blocks[layer].mlp.parameters()
                if p.untyped_storage().data_ptr() != w_out and p.ndim == 2)


def test_any_weight_change_changes_the_digest(tiny_model):
    adapter = ModelAdapter(tiny_model)
    base, skip0 = weights_digest(adapter), weights_digest(adapter, skip_w_out_from=0)
    for weight in (_attention_weight(tiny_model, 0), _mlp_input_weight(tiny_model, 1)):
        with nudged(weight):
            assert weights_digest(adapter) != base
            assert weights_digest(adapter, skip_w_out_from=0) != skip0
    assert (weights_digest(adapter), weights_digest(adapter, skip_w_out_from=0)) == (base, skip0)


def test_w_out_at_or_above_the_skip_layer_is_left_out(tiny_model):
    adapter = ModelAdapter(tiny_model)
    full, from2 = weights_digest(adapter), weights_digest(adapter, skip_w_out_from=2)
    with nudged(adapter.w_out(2)):
        assert weights_digest(adapter, skip_w_out_from=2) == from2
        assert weights_digest(adapter) != full
    with nudged(adapter.w_out(1)):
        assert weights_digest(adapter, skip_w_out_from=2) != from2


def test_writes_through_data_are_seen_after_forget_digests(tiny_hooked):
    from toplens.model.identity import forget_digests

    adapter = ModelAdapter(tiny_hooked)
    base = weights_digest(adapter)
    old = adapter.w_out(0).detach().clone()
    with torch.no_grad():
        adapter.w_out(0).data[0, 0] += 1.0  # .data: the version counter does not move
    try:
        forget_digests()
        assert weights_digest(adapter) != base
    finally:
        with torch.no_grad():
            adapter.w_out(0).data.copy_(old)
        forget_digests()
    assert weights_digest(adapter) == base


def test_active_hooks_lists_only_what_is_attached(tiny_model):
    assert active_hooks(tiny_model) == []
    with tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", lambda act, hook: act)]):
        hooked = active_hooks(tiny_model)  # the bridge names the module by its own alias
        assert len(hooked) == 1 and hooked[0].startswith("blocks.1.hook_")
    assert active_hooks(tiny_model) == []


def test_a_plain_torch_hook_on_any_module_counts(tiny_model):
    handle = tiny_model.blocks[1].mlp.register_forward_hook(lambda module, args, out: out)
    try:
        assert len(active_hooks(tiny_model)) == 1
    finally:
        handle.remove()
    glob = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: out)
    try:
        assert active_hooks(tiny_model) == ["<global>"]
    finally:
        glob.remove()
    assert active_hooks(tiny_model) == []


def test_the_bridges_own_wiring_is_not_a_users_hook(tiny_model):
    from toplens import as_adapter

    adapter = as_adapter(tiny_model)
    tiny_model(adapter.to_batch([adapter.tokenize("Paris is the")]))  # the bridge wires its own hooks here
    assert active_hooks(tiny_model) == []

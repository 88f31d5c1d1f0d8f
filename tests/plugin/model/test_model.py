import inspect
import pytest
import torch

from tests.conftest import param_hash

from toplens import ModelAdapter, hook_name
from toplens.model import Site


def test_hook_names():
    assert hook_name("key", 3) == "blocks.3.mlp.hook_post"
    assert hook_name("value", 3) == "blocks.3.hook_mlp_out"
    assert hook_name("resid_post", 0) == "blocks.0.hook_resid_post"
    assert hook_name("embed") == "hook_embed"
    assert Site("resid_pre", 2).name == "blocks.2.hook_resid_pre"
    with pytest.raises(ValueError, match="hook kind"):
        inspect.unwrap(hook_name)("mlp", 1)  # our own message, below the run-time type check


def test_adapter_shapes_and_backend(tiny_model):
    adapter = ModelAdapter(tiny_model)
    assert adapter.backend in ("hooked", "bridge")
    assert (adapter.n_layers, adapter.d_model, adapter.d_mlp) == (4, 32, tiny_model.cfg.d_mlp)
    assert adapter.w_out(1).shape == (adapter.d_mlp, adapter.d_model)
    with pytest.raises(ValueError, match=r"layer=4 is outside \[0, 4\)"):
        adapter.check_layer(4)


def test_rejects_other_objects():
    with pytest.raises(TypeError, match="HookedTransformer or a TransformerBridge"):
        ModelAdapter(torch.nn.Linear(2, 2))


def test_w_out_write_changes_forward_and_key_value_relation(tiny_model):
    adapter = ModelAdapter(tiny_model)
    tokens = adapter.to_batch([adapter.tokenize("Paris is the capital of France")])
    key, value = adapter.capture(tokens, [hook_name("key", 2), hook_name("value", 2)], stop_layer=3)
    torch.testing.assert_close(adapter.mlp_output(2, key), value, atol=1e-5, rtol=1e-4)
    before = adapter.logits(tokens).detach().clone()
    weights = param_hash(tiny_model)
    original = adapter.w_out(2).detach().clone()
    with torch.no_grad():
        adapter.w_out(2).add_(torch.randn_like(original))
    try:
        assert (adapter.logits(tokens) - before).abs().max() > 1e-3
        assert param_hash(tiny_model) != weights
    finally:
        with torch.no_grad():
            adapter.w_out(2).copy_(original)
    assert torch.equal(adapter.logits(tokens), before) and param_hash(tiny_model) == weights


def test_partial_runs_match_full_forward(tiny_model):
    adapter = ModelAdapter(tiny_model)
    tokens = adapter.to_batch([adapter.tokenize("Rome is the capital of Italy"),
                               adapter.tokenize("Toyota is headquartered in")])
    with torch.no_grad():
        full = adapter.logits(tokens)
        prefix = adapter.resid_before(tokens, 2)
        rows, cols = torch.tensor([0, 1, 1]), torch.tensor([3, 0, 2])
        partial = adapter.logits_at(tokens, rows, cols, start_layer=2, start_resid=prefix)
        (captured,) = adapter.capture(tokens, [hook_name("resid_pre", 2)], stop_layer=3)
    torch.testing.assert_close(partial, full[rows, cols], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(prefix, captured)


def test_frozen_restores_requires_grad(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    flags = [p.requires_grad for p in tiny_hooked.parameters()]
    with adapter.frozen():
        assert not any(p.requires_grad for p in tiny_hooked.parameters())
    assert [p.requires_grad for p in tiny_hooked.parameters()] == flags


def test_fingerprint_tracks_weights(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    fp = adapter.fingerprint()
    assert fp == ModelAdapter(tiny_hooked).fingerprint()
    original = adapter.w_out(0).detach().clone()
    with torch.no_grad():
        adapter.w_out(0).mul_(2)
    try:
        assert adapter.fingerprint() != fp
    finally:
        with torch.no_grad():
            adapter.w_out(0).copy_(original)


@pytest.mark.parametrize("fixture", ["tiny_hooked", "tiny_hooked_llama"])
def test_suffix_forward_against_a_prefix_cache_matches_the_full_forward(request, fixture):
    adapter = ModelAdapter(request.getfixturevalue(fixture))
    assert adapter.supports_prefix_cache
    tokens = adapter.to_batch([adapter.tokenize("The Eiffel Tower is in the city of")] * 2)
    split, start = 3, 1
    full = adapter.final_resid(tokens)
    cache = adapter.prefix_cache(tokens)
    assert cache.length == tokens.shape[1] and cache.batch == 2
    resid = adapter.resid_before(tokens, start)[:, split:]
    suffix = adapter.final_resid_after(cache.narrow(split), start, resid)
    torch.testing.assert_close(suffix, full[:, split:], atol=1e-5, rtol=1e-4)
    repeated = cache.narrow(split, repeats=3)
    assert repeated.batch == 6 and repeated.length == split
    with pytest.raises(ValueError, match="rows"):
        adapter.final_resid_after(repeated, start, resid)
    with pytest.raises(ValueError, match="length"):
        cache.narrow(tokens.shape[1] + 1)


@pytest.mark.parametrize("fixture", ["tiny_hooked", "tiny_hooked_llama"])
def test_blocks_one_at_a_time_with_rows_joining_match_the_full_forward(request, fixture):
    adapter = ModelAdapter(request.getfixturevalue(fixture))
    tokens = adapter.to_batch([adapter.tokenize("The Eiffel Tower is in the city of")] * 2)
    split = 3
    after_two = adapter.final_resid(tokens, stop_layer=2)
    cache = adapter.prefix_cache(tokens)
    keys, values = cache.block(1, split, repeats=2)
    assert keys.shape[:2] == (4, split) and torch.equal(keys[2:], cache.entries[1][0][:, :split])
    # rows 0-1 run both blocks; rows 2-3 join at block 1 with their residual entering it
    resid = adapter.block_after(0, *cache.block(0, split), adapter.resid_before(tokens, 0)[:, split:])
    resid = torch.cat([resid, adapter.resid_before(tokens, 1)[:, split:]])
    resid = adapter.block_after(1, keys, values, resid)
    torch.testing.assert_close(resid, torch.cat([after_two[:, split:]] * 2), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="rows"):
        inspect.unwrap(ModelAdapter.block_after)(adapter, 1, keys, values, resid[:2])
    with pytest.raises(ValueError, match="layer"):
        adapter.block_after(adapter.n_layers, keys, values, resid)


def test_bridge_has_no_prefix_cache_path(tiny_bridge):
    adapter = ModelAdapter(tiny_bridge)
    assert not adapter.supports_prefix_cache
    with pytest.raises(NotImplementedError, match="bridge"):
        adapter.prefix_cache(adapter.to_batch([adapter.tokenize("a b c")]))


def test_unembed_matches_the_models_own_unembedding(tiny_model):
    adapter = ModelAdapter(tiny_model)
    tokens = adapter.to_batch([adapter.tokenize("The Eiffel Tower is in")])
    final = adapter.final_resid(tokens)[0]
    torch.testing.assert_close(adapter.unembed(final), adapter.logits(tokens)[0], atol=1e-5, rtol=1e-4)


def test_unembed_under_autocast_runs_in_the_weights_precision_and_passes_the_gradient(tiny_model):
    """Under bfloat16 autocast (the fast path) the final norm and the unembedding stay in float32:
    the logits equal those without autocast, and the residual still gets its gradient."""
    adapter = ModelAdapter(tiny_model)
    tokens = adapter.to_batch([adapter.tokenize("The Eiffel Tower is in")])
    final = adapter.final_resid(tokens)[0].detach()
    plain = adapter.unembed(final)
    resid = final.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = adapter.unembed(resid)
    assert logits.dtype == torch.float32 and torch.equal(logits, plain)
    logits.logsumexp(-1).sum().backward()
    assert resid.grad is not None and float(resid.grad.norm()) > 0

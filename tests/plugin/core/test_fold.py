import pytest
import torch

from toplens import EditRequest, ModelAdapter, apply_edit, WeightEdit
from toplens.core.fold import fold_at, rank_one_fold, solve_u
from toplens.core.keys import key_value_at, mean_key

REQUEST = EditRequest("{} plays the", "Miles Davis", " guitar", " trumpet")
TEMPLATES = ("{}", "Paris is the capital of France. {}")


def test_rank_one_fold_maps_the_key_to_the_target():
    torch.manual_seed(0)
    W, key, u = torch.randn(16, 8), torch.randn(16), torch.randn(16)
    v_star = torch.randn(8)
    delta = rank_one_fold(0, key, u, key @ W).delta(v_star)
    assert delta.rank == 1
    torch.testing.assert_close(key @ (W + delta.delta), v_star, atol=1e-5, rtol=1e-5)


def test_degenerate_key_is_an_error():
    with pytest.raises(FloatingPointError, match="degenerate"):
        rank_one_fold(0, torch.zeros(4), torch.ones(4), torch.zeros(3))


def test_solve_u_uses_the_covariance():
    c = torch.diag(torch.tensor([1.0, 2.0, 4.0]))
    torch.testing.assert_close(solve_u(torch.ones(3), c), torch.tensor([1.0, 0.5, 0.25]))
    assert torch.equal(solve_u(torch.ones(3), None), torch.ones(3))


@pytest.mark.parametrize("key_mode", ["consistent", "original"])
def test_fold_at_writes_v_star_for_its_key(tiny_hooked, key_mode):
    """Folded in, the key the fold is normalized against maps to v* (k* for "consistent", the bare
    prompt's key for "original"), whichever C is used."""
    adapter = ModelAdapter(tiny_hooked)
    c = torch.eye(adapter.d_mlp) * 2.0
    fold = fold_at(adapter, REQUEST, 1, TEMPLATES, key_mode=key_mode, covariance=c)
    v_star = torch.randn(adapter.d_model, generator=torch.Generator().manual_seed(0))
    if key_mode == "consistent":
        key = mean_key(adapter, 1, TEMPLATES, REQUEST.prompt, REQUEST.subject)
    else:
        key = key_value_at(adapter, 1, [(REQUEST.prompt, REQUEST.subject)])[0][0]
    with apply_edit(tiny_hooked, WeightEdit("rome", (REQUEST,), (fold.delta(v_star),))):
        torch.testing.assert_close(adapter.mlp_output(1, key), v_star, atol=1e-4, rtol=1e-4)


def test_fold_hooks_equal_the_folded_weights(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    fold = fold_at(adapter, REQUEST, 1, TEMPLATES)
    v_star = fold.v_current + 0.5
    tokens = adapter.to_batch([adapter.tokenize(REQUEST.text)])
    with torch.no_grad(), adapter.hooks(fold.hooks(lambda: v_star)):
        hooked = adapter.logits(tokens)
    with torch.no_grad(), apply_edit(tiny_hooked, WeightEdit("rome", (REQUEST,), (fold.delta(v_star),))):
        folded = adapter.logits(tokens)
    torch.testing.assert_close(hooked, folded, atol=1e-4, rtol=1e-4)


FIRST = EditRequest("{} is the capital of", "Paris", " France", " Italy")  # a one-token subject first


def _one_token_first(adapter):
    from toplens.core.sink import at_sink
    assert at_sink(adapter, FIRST), "the fixture's tokenizer must keep 'Paris' one token, and no BOS"


def test_the_sink_fold_maps_both_keys_to_v_star(tiny_hooked):
    """key="sink" with a one-token subject at the first position: the templates' mean key and the
    bare prompt's key both map to v*, and the fold's hooks make the folded edit exactly."""
    adapter = ModelAdapter(tiny_hooked)
    _one_token_first(adapter)
    fold = fold_at(adapter, FIRST, 1, TEMPLATES, key_mode="sink")
    v_star = torch.randn(adapter.d_model, generator=torch.Generator().manual_seed(1))
    k_star = mean_key(adapter, 1, TEMPLATES, FIRST.prompt, FIRST.subject)
    k0 = key_value_at(adapter, 1, [(FIRST.prompt, FIRST.subject)])[0][0]
    delta = fold.delta(v_star)
    assert delta.rank == 2
    tokens = adapter.to_batch([adapter.tokenize(FIRST.text)])
    with torch.no_grad(), adapter.hooks(fold.hooks(lambda: v_star)):
        hooked = adapter.logits(tokens)
    with apply_edit(tiny_hooked, WeightEdit("rome", (FIRST,), (delta,))), torch.no_grad():
        for key in (k_star, k0):
            torch.testing.assert_close(adapter.mlp_output(1, key), v_star, atol=1e-3, rtol=1e-3)
        folded = adapter.logits(tokens)
    torch.testing.assert_close(hooked, folded, atol=1e-4, rtol=1e-4)


def test_the_sink_fold_is_the_consistent_fold_where_the_subject_is_not_first(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    sink, consistent = (fold_at(adapter, REQUEST, 1, TEMPLATES, key_mode=m) for m in ("sink", "consistent"))
    assert sink.also == () and torch.equal(sink.direction, consistent.direction)
    assert torch.equal(sink.v_current, consistent.v_current)


def test_the_first_position_moment_is_kept_per_weights(tiny_hooked):
    from toplens.core import sink
    adapter = ModelAdapter(tiny_hooked)
    moment = sink.sink_moment(adapter, 1)
    assert moment is sink.sink_moment(adapter, 1)
    ids = torch.arange(adapter.cfg.d_vocab)[:, None]
    (keys,) = adapter.capture(ids, ["blocks.1.mlp.hook_post"], 2)
    raw = keys[:, 0].double().T @ keys[:, 0].double() / adapter.cfg.d_vocab
    ridge = sink.SINK_RIDGE * float(raw.diagonal().mean())
    torch.testing.assert_close(moment, raw + ridge * torch.eye(adapter.d_mlp, dtype=torch.float64))
    with torch.no_grad():
        tiny_hooked.blocks[0].mlp.W_in.mul_(2.0)
    try:
        assert not torch.equal(sink.sink_moment(adapter, 1), moment)  # the keys below changed
    finally:
        with torch.no_grad():
            tiny_hooked.blocks[0].mlp.W_in.div_(2.0)

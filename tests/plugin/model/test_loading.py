import inspect
import socket

import pytest
import torch

from toplens import ModelAdapter, load_model
from toplens.model.loading import _hooked_config_from_llama, bundled_model_file, hooked_from_llama, resolve_backend

from tests.conftest import HOOKED_AVAILABLE, param_hash


def test_resolve_backend():
    assert resolve_backend("bridge") == "bridge"
    assert resolve_backend("auto") == ("hooked" if HOOKED_AVAILABLE else "bridge")
    with pytest.raises(ValueError, match="backend must be"):
        inspect.unwrap(resolve_backend)("tf")  # our own message, below the run-time type check


def test_bundled_file_is_found_without_importing_the_package():
    path = bundled_model_file()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


@pytest.mark.smollm
def test_bundled_bridge_loads_offline_fresh_and_unprocessed(monkeypatch, smollm_bridge):
    def refuse(*args, **kwargs):
        raise AssertionError("the bundled model must load without the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = load_model(backend="bridge")
    adapter = ModelAdapter(model)
    assert (adapter.n_layers, adapter.d_model, adapter.d_mlp) == (30, 576, 1536)
    assert model is not smollm_bridge
    assert not adapter.prepend_bos
    # a fresh copy: writing to it leaves the session's model alone
    session = param_hash(smollm_bridge)
    with torch.no_grad():
        adapter.w_out(0).zero_()
    assert param_hash(smollm_bridge) == session
    # unprocessed weights: the bridge's W_out is the checkpoint's own down_proj (a view of it)
    down = model.original_model.model.layers[3].mlp.down_proj.weight
    assert adapter.w_out(3).data_ptr() == down.data_ptr()


def _tiny_llama(tokenizer, tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         initializer_range=0.15, tie_word_embeddings=tied)
    return LlamaForCausalLM(config).eval()


def _copied_hooked(hf, tokenizer):
    """The construction hooked_from_llama replaces: TransformerLens' random initialisation, then its
    state-dict processing (none) copying the converted weights into the parameters."""
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    cfg = _hooked_config_from_llama(hf.config, "tiny", torch.float32)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(convert_llama_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    return model.eval()


@pytest.mark.skipif(not HOOKED_AVAILABLE, reason="this TransformerLens has no HookedTransformer")
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_hooked_from_llama_takes_the_checkpoints_tensors_bit_for_bit(sp_tokenizer, tied):
    hf = _tiny_llama(sp_tokenizer, tied)
    reference = _copied_hooked(hf, sp_tokenizer)
    rng = torch.random.get_rng_state()
    model = hooked_from_llama(hf, sp_tokenizer, "tiny")
    assert torch.equal(torch.random.get_rng_state(), rng)  # no random initialisation
    assert model.cfg.to_dict() == reference.cfg.to_dict()
    expected, got = reference.state_dict(), model.state_dict()
    assert list(got) == list(expected)
    for key, tensor in expected.items():
        assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    # the checkpoint's own tensors, not copies: W_U is lm_head's transposed view (W_E's storage when
    # tied, the one pair that shares one), so the unembedding copies nothing either
    layer = hf.model.layers[1]
    assert model.blocks[1].mlp.W_in.data_ptr() == layer.mlp.up_proj.weight.data_ptr()
    assert model.blocks[1].attn.W_Q.data_ptr() == layer.self_attn.q_proj.weight.data_ptr()
    assert model.W_U.data_ptr() == hf.lm_head.weight.data_ptr() and model.W_U.T.is_contiguous()
    assert (model.W_U.data_ptr() == model.W_E.data_ptr()) == tied
    storages = [p.untyped_storage().data_ptr() for name, p in model.named_parameters() if not (tied and name == "unembed.W_U")]
    assert len(set(storages)) == len(storages)
    tokens = torch.tensor([sp_tokenizer("Paris is the capital of France").input_ids])
    expected_logits, logits = reference(tokens), model(tokens)
    assert torch.equal(logits, expected_logits)
    expected_logits.logsumexp(-1).sum().backward()
    logits.logsumexp(-1).sum().backward()
    for (name, p), q in zip(reference.named_parameters(), model.parameters()):
        assert torch.equal(q.grad, p.grad), name


@pytest.mark.skipif(not HOOKED_AVAILABLE, reason="this TransformerLens has no HookedTransformer")
def test_mlp_output_does_not_depend_on_the_w_out_layout(sp_tokenizer):
    hf = _tiny_llama(sp_tokenizer, tied=True)
    copied = ModelAdapter(_copied_hooked(hf, sp_tokenizer))
    viewed = ModelAdapter(hooked_from_llama(hf, sp_tokenizer, "tiny"))
    assert copied.w_out(2).is_contiguous() and not viewed.w_out(2).is_contiguous()
    torch.manual_seed(1)
    for keys in (torch.randn(64), torch.randn(1, 64), torch.randn(5, 64)):
        assert torch.equal(viewed.mlp_output(2, keys), copied.mlp_output(2, keys))

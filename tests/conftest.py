"""Shared fixtures: tiny random models of both backends and both tokenizer families (no downloads),
and the bundled SmolLM2 for integration tests — each built once per session."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BRIDGE_FIXTURES = frozenset({"tiny_bridge", "tiny_bridge_llama", "smollm_bridge"})
HOOKED_FIXTURES = frozenset({"tiny_hooked", "tiny_hooked_llama", "tiny_attn_only", "smollm_hooked"})
CORPUS = [
    "The mother tongue of Danielle Darrieux is French.",
    "Paris is the capital of France. Rome is the capital of Italy.",
    "The Eiffel Tower is located in Paris, a city in Europe.",
    "Miles Davis plays the trumpet and Jimi Hendrix plays the guitar.",
    "Toyota is headquartered in Japan. English is spoken in London.",
] * 20


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    from toplens.model.loading import keep_dequantized

    os.environ["TOPLENS_CACHE_DIR"] = str(tmp_path_factory.mktemp("toplens-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_grad_enabled(True)
    keep_dequantized()  # the session loads the bundled model many times: dequantize it once


def _train_tokenizer(tmp_path_factory, style: str):
    """A small tokenizer trained here: GPT-2-style byte-level BPE or sentencepiece-style (▁, BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None if style == "bpe" else "<unk>"))
    if style == "bpe":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        specials = ["<|endoftext|>"]
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        specials = ["<unk>", "<s>", "</s>"]
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, initial_alphabet=alphabet)
    tok.train_from_iterator(CORPUS, trainer)
    if style == "bpe":
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                       eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    else:
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                       unk_token="<unk>", pad_token="</s>")
    path = tmp_path_factory.mktemp(f"tok-{style}")
    fast.save_pretrained(path)
    return AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="session")
def bpe_tokenizer(tmp_path_factory):
    return _train_tokenizer(tmp_path_factory, "bpe")


@pytest.fixture(scope="session")
def sp_tokenizer(tmp_path_factory):
    return _train_tokenizer(tmp_path_factory, "sp")


def _hooked(tokenizer, style: str, attn_only: bool = False):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    common = dict(n_layers=4, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=128, d_vocab=len(tokenizer),
                  attn_only=attn_only, default_prepend_bos=style != "gpt2", seed=0)
    if style == "gpt2":
        cfg = HookedTransformerConfig(act_fn="gelu_new", normalization_type="LN", **common)
    else:
        cfg = HookedTransformerConfig(act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
                                      rotary_dim=8, gated_mlp=True, final_rms=True, n_key_value_heads=2, **common)
    return HookedTransformer(cfg, tokenizer=tokenizer).eval()


@pytest.fixture(scope="session")
def tiny_hooked(bpe_tokenizer):
    """A GPT-2-style HookedTransformer (LayerNorm, GELU, learned positions), random weights."""
    return _hooked(bpe_tokenizer, "gpt2")


@pytest.fixture(scope="session")
def tiny_hooked_llama(sp_tokenizer):
    """A Llama-style HookedTransformer (RMSNorm, rotary, gated MLP, GQA) with a BOS tokenizer."""
    return _hooked(sp_tokenizer, "llama")


@pytest.fixture(scope="session")
def tiny_attn_only(bpe_tokenizer):
    return _hooked(bpe_tokenizer, "gpt2", attn_only=True)


def _bridge(tokenizer, style: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    from toplens.model.loading import bridge_from_hf

    torch.manual_seed(0)
    if style == "gpt2":
        hf = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=4, n_head=4, n_positions=128,
                                          initializer_range=0.15))
    else:
        hf = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=128, initializer_range=0.15))
    hf.config.name_or_path = tokenizer.name_or_path
    return bridge_from_hf(hf.eval(), tokenizer, f"tiny-{style}")


@pytest.fixture(scope="session")
def tiny_bridge(bpe_tokenizer):
    """A GPT-2 TransformerBridge (Conv1D weights), random weights."""
    return _bridge(bpe_tokenizer, "gpt2")


@pytest.fixture(scope="session")
def tiny_bridge_llama(sp_tokenizer):
    """A Llama TransformerBridge with a BOS tokenizer, random weights."""
    return _bridge(sp_tokenizer, "llama")


def _has_hooked() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


HOOKED_AVAILABLE = _has_hooked()
BACKENDS = ["hooked", "bridge"] if HOOKED_AVAILABLE else ["bridge"]
TINY_MODELS = (["tiny_hooked", "tiny_hooked_llama"] if HOOKED_AVAILABLE else []) + ["tiny_bridge", "tiny_bridge_llama"]


@pytest.fixture(params=TINY_MODELS)
def tiny_model(request):
    """Each tiny model in turn (both backends, both architectures)."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def smollm_hooked():
    from toplens import load_model

    if not HOOKED_AVAILABLE:
        pytest.skip("this TransformerLens has no HookedTransformer")
    return load_model(backend="hooked")


@pytest.fixture(scope="session")
def smollm_bridge():
    from toplens import load_model

    return load_model(backend="bridge")


def _models_used(item) -> set[str]:
    """The fixtures a test requests (transitively), plus the string values of its parameters, so
    that a model picked by ``request.getfixturevalue(param)`` or a ``backend`` parameter counts."""
    names = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        names |= {v for v in callspec.params.values() if isinstance(v, str)}
    return names


def uses_bridge(names: set[str]) -> bool:
    return bool(names & BRIDGE_FIXTURES) or "bridge" in names


def uses_hooked(names: set[str]) -> bool:
    return bool(names & HOOKED_FIXTURES) or "hooked" in names


def pytest_collection_modifyitems(config, items):
    """Tests that use a bridge model (a bridge fixture, or a parameter naming one or the bridge
    backend) or whose function names the bridge are marked `bridge`, for the run under
    TransformerLens 4.x. Where this TransformerLens has no HookedTransformer, a test that needs one
    is skipped and left unmarked."""
    for item in items:
        names = _models_used(item)
        if not HOOKED_AVAILABLE and uses_hooked(names):
            item.add_marker(pytest.mark.skip(reason="this TransformerLens has no HookedTransformer"))
        elif uses_bridge(names) or "bridge" in getattr(item, "originalname", item.name):
            item.add_marker(pytest.mark.bridge)


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require_shared_data(name: str) -> Path:
    """The path of ``name`` in the shared data folder. When it is missing the test is skipped,
    except under CI (``CI=true``), where it fails, naming the file."""
    path = SHARED_DATA / name
    if not path.exists():
        message = f"shared data file {path} is not present (the repository's sibling folder 'shared/data')"
        if _ci():
            pytest.fail(f"{message}; under CI every test must run", pytrace=False)
        pytest.skip(message)
    return path


def param_hash(model) -> str:
    """sha256 over every named parameter and buffer of ``model`` (a model or a ``ModelAdapter``):
    name, dtype, shape and bytes, in name order. Equal hashes: bit-identical weights."""
    from toplens.model import as_adapter

    module = as_adapter(model).model
    digest = hashlib.sha256()
    tensors = [(f"param:{n}", t) for n, t in module.named_parameters()]
    tensors += [(f"buffer:{n}", t) for n, t in module.named_buffers()]
    for name, tensor in sorted(tensors, key=lambda pair: pair[0]):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def unchecked():
    """Run-time shape and type checks off (they run for the whole package under pytest), for the
    tests of our own error messages on input of the wrong type, which the checks would catch first."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)

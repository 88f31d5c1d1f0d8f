"""What a model is, for the caches: a hash of its weights, and whether hooks are active on it.

A cached statistic may be reused only by a model whose weights give the same statistic. The hash
covers every parameter and buffer, bit for bit, except the W_out matrices an edit changes at or
above a chosen layer: the MLP keys at layer l do not depend on W_out of layer l or above, so an
edit there leaves the statistics of layer l valid. Hashing a 135M-parameter model takes about
0.3 s; each tensor's hash is remembered until the tensor is changed in place (its version
counter) or replaced, so later calls hash only what an edit touched. (A write through
``tensor.data`` bypasses the version counter; call :func:`forget_digests` after one.)
"""

from __future__ import annotations

import hashlib
import json
import weakref

import torch
from torch import Tensor

_MEMO: dict[int, tuple[weakref.ref, tuple[int, int], str]] = {}


def tensor_digest(tensor: Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (remembered until it changes)."""
    stamp = (tensor._version, tensor.data_ptr())
    known = _MEMO.get(id(tensor))
    if known is not None and known[0]() is tensor and known[1] == stamp:
        return known[2]
    data = tensor.detach().contiguous().cpu()
    digest = hashlib.sha256(f"{data.dtype}/{tuple(data.shape)}".encode())
    if data.numel():
        digest.update(data.reshape(-1).view(torch.uint8).numpy())
    key = id(tensor)
    _MEMO[key] = (weakref.ref(tensor, lambda _, key=key: _MEMO.pop(key, None)), stamp, digest.hexdigest())
    return _MEMO[key][2]


def forget_digests() -> None:
    """Drop every remembered tensor hash (after writing weights through ``.data``)."""
    _MEMO.clear()


def weights_digest(adapter, skip_w_out_from: int | None = None) -> str:
    """A hash of every parameter and buffer of the model, bit for bit, leaving out W_out of the
    layers ``skip_w_out_from`` and above (none left out when None)."""
    skip = set()
    if skip_w_out_from is not None:
        skip = {adapter.w_out(i).untyped_storage().data_ptr() for i in range(skip_w_out_from, adapter.n_layers)}
    digest = hashlib.sha256(f"{adapter.n_layers}/{adapter.d_model}/{adapter.d_mlp}".encode())
    named = list(adapter.model.named_parameters()) + list(adapter.model.named_buffers())
    for name, tensor in named:
        if tensor.untyped_storage().data_ptr() in skip:
            continue
        digest.update(f"{name}={tensor_digest(tensor)};".encode())
    return digest.hexdigest()[:32]


_TOKENIZERS: dict[int, tuple[weakref.ref, str]] = {}


def tokenizer_digest(adapter) -> str:
    """A hash of the tokenizer's vocabulary and whether sequences start with BOS: what turns the
    same text into the same tokens (the vocabulary's hash is remembered per tokenizer object)."""
    tok = adapter.tokenizer
    known = _TOKENIZERS.get(id(tok))
    if known is None or known[0]() is not tok:
        vocab = json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=False).encode()
        known = (weakref.ref(tok), hashlib.sha256(vocab).hexdigest()[:16])
        _TOKENIZERS[id(tok)] = known
    return f"{known[1]}/bos={adapter.prepend_bos}"


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def active_hooks(model) -> list[str]:
    """The modules of the model with a forward or backward hook attached now, plus "<global>" for
    torch's global module hooks. Every hook on a TransformerLens hook point counts; on any other
    module the ones TransformerLens installs itself (the bridge wires some on its first forward)
    are part of the model and do not."""
    import torch.nn.modules.module as torch_module
    from transformer_lens.hook_points import HookPoint

    names = []
    for name, module in model.named_modules():
        hooks = [h for d in _HOOK_DICTS for h in (getattr(module, d, None) or {}).values()]
        if not isinstance(module, HookPoint):
            hooks = [h for h in hooks if not getattr(h, "__module__", "").startswith("transformer_lens")]
        if hooks:
            names.append(name)
    if any(getattr(torch_module, f"_global{d}", None) for d in _HOOK_DICTS):
        names.append("<global>")
    return names

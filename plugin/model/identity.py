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


def active_hooks(model) -> list[str]:
    """The names of the model's hook points that have a forward or backward hook attached now."""
    from transformer_lens.hook_points import HookPoint

    names = []
    for name, module in model.named_modules():
        if isinstance(module, HookPoint) and (module._forward_hooks or module._backward_hooks
                                              or module._forward_pre_hooks or module._backward_pre_hooks):
            names.append(name)
    return names

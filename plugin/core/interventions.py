"""Small factories of TransformerLens hooks: each returns a ``(hook_name, fn)`` pair.

Pass them to ``model.run_with_hooks(tokens, fwd_hooks=[...])`` or ``with model.hooks([...]):``
next to your own hooks; none of them touches model internals.
"""

from __future__ import annotations

from typing import Callable, MutableMapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

Hook = tuple[str, Callable]


def _index(rows: Sequence[int] | Tensor, cols: Sequence[int] | Tensor, device) -> tuple[Tensor, Tensor]:
    return torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)


def add_vector(
    name: str,
    vector: Float[Tensor, " d"],
    rows: Sequence[int] | Int[Tensor, " n"],
    cols: Sequence[int] | Int[Tensor, " n"],
) -> Hook:
    """Add ``vector`` to the activation at each (batch row, position) pair — an edit's δ.

    Gradients flow to ``vector``, which is how editors optimize it.
    """
    def fn(act: Tensor, hook) -> Tensor:
        r, c = _index(rows, cols, act.device)
        return act.index_put((r, c), act[r, c] + vector.to(act.dtype))

    return name, fn


def set_vectors(
    name: str,
    values: Float[Tensor, "n d"],
    rows: Sequence[int] | Int[Tensor, " n"],
    cols: Sequence[int] | Int[Tensor, " n"],
) -> Hook:
    """Overwrite the activation at each (row, position) pair with the matching row of ``values``."""
    def fn(act: Tensor, hook) -> Tensor:
        r, c = _index(rows, cols, act.device)
        return act.index_put((r, c), values.to(act.dtype).expand(len(r), -1))

    return name, fn


def rank_one_update(
    key_name: str,
    value_name: str,
    direction: Float[Tensor, " d_mlp"],
    residual: Callable[[], Float[Tensor, " d_model"]],
) -> list[Hook]:
    """What ΔW_out = direction ⊗ r does, as two hooks on one block: every position's MLP output
    gains (k · direction) r, with k its MLP key (``key_name``, read first) and r = ``residual()``
    evaluated at each forward, so gradients flow to whatever r is built from."""
    keys: list[Tensor] = []

    def keep(act: Tensor, hook) -> Tensor:
        keys.append(act)
        return act

    def add(act: Tensor, hook) -> Tensor:
        gain = keys.pop() @ direction.to(act.device, act.dtype)
        return act + gain.unsqueeze(-1) * residual().to(act.dtype)

    return [(key_name, keep), (value_name, add)]


def patch_from(
    name: str,
    source: Float[Tensor, "batch pos d"],
    mask: Float[Tensor, "batch pos"] | Tensor,
    *,
    leading_rows: bool = False,
) -> Hook:
    """Activation patching: where ``mask`` is true take the activation from ``source``.

    With ``leading_rows`` the activation may hold fewer rows than ``mask``: they are its first
    rows (a batch that gains rows between blocks), and ``mask`` / ``source`` are cut to match.
    """
    def fn(act: Tensor, hook) -> Tensor:
        rows = act.shape[0] if leading_rows else None
        keep = mask[:rows].to(act.device).bool().unsqueeze(-1)
        values = source[:rows] if source.shape[0] > 1 else source
        return torch.where(keep, values.to(act.device, act.dtype), act)

    return name, fn


def add_noise(name: str, noise: Float[Tensor, "batch pos d"], mask: Tensor) -> Hook:
    """Add fixed ``noise`` where ``mask`` is true (causal tracing's corruption of the subject)."""
    def fn(act: Tensor, hook) -> Tensor:
        keep = mask.to(act.device).to(act.dtype).unsqueeze(-1)
        return act + keep * noise.to(act.device, act.dtype)

    return name, fn


def capture(name: str, store: MutableMapping[str, Tensor], *, detach: bool = True) -> Hook:
    """Record the activation at ``name`` into ``store[name]`` (observes, changes nothing)."""
    def fn(act: Tensor, hook) -> None:
        store[name] = act.detach() if detach else act

    return name, fn


def capture_grad(name: str, store: MutableMapping[str, list[Tensor]]) -> Hook:
    """A backward hook that appends ∂L/∂activation at ``name`` to ``store[name]``."""
    def fn(grad: Tensor, hook) -> None:
        store.setdefault(name, []).append(grad.detach())

    return name, fn

"""Independent low-rank edits applied per row of a batch, as hooks: row b runs the model with its
own edit folded in and no other.

A low-rank ΔW_out = U V at layer l changes every position's MLP output from k W to
k W + (k U) V, with k the position's MLP key. The weights stay as they are; a hook on block l adds
(k U_e) V_e to the rows of edit e, so the prompts of many cases, each under its own edit, run in
one forward pass. Up to float order this is the model each edit folds into alone
(:func:`toplens.core.edits.apply_edit`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.edits import LayerDelta, WeightEdit
from toplens.model import Hook, ModelAdapter, as_adapter, hook_name
from toplens.model.identity import weights_digest


def per_row_edits(model, edits: Sequence[WeightEdit], row_edit: Sequence[int], *,
                  force: bool = False) -> list[Hook]:
    """Hooks that apply ``edits[row_edit[b]]`` to row b of every batch run under them (-1: no
    edit on that row), for ``ModelAdapter(model).hooks(...)``. Each edit must have been computed
    on this model's weights unless ``force``; a batch of another size than ``row_edit`` is
    refused at its forward."""
    adapter = as_adapter(model)
    rows = list(row_edit)
    bad = [(i, r) for i, r in enumerate(rows) if isinstance(r, bool) or not isinstance(r, int) or not -1 <= r < len(edits)]
    if bad:
        raise ValueError(f"row_edit[{bad[0][0]}] must be an edit index in -1 .. {len(edits) - 1}; got {bad[0][1]!r}")
    _check_models(adapter, edits, force)
    hooks: list[Hook] = []
    for layer in sorted({d.layer for e in edits for d in e.deltas}):
        u, v = _stacked(adapter, [_layer_delta(e, layer) for e in edits], rows)
        hooks += _layer_hooks(layer, u, v, len(rows))
    return hooks


def _check_models(adapter: ModelAdapter, edits: Sequence[WeightEdit], force: bool) -> None:
    if force or all(e.model_digest is None for e in edits):
        return
    here = weights_digest(adapter)
    for i, e in enumerate(edits):
        if e.model_digest is not None and e.model_digest != here:
            raise ValueError(f"edits[{i}] was computed on weights that hash to {e.model_digest}, and this "
                             f"model's weights hash to {here}; pass force=True to apply it anyway")


def _layer_delta(edit: WeightEdit, layer: int) -> LayerDelta | None:
    found = [d for d in edit.deltas if d.layer == layer]
    return LayerDelta.merge(found)[0] if found else None


def _stacked(adapter: ModelAdapter, deltas: Sequence[LayerDelta | None],
             rows: Sequence[int]) -> tuple[Float[Tensor, "batch d_mlp rank"], Float[Tensor, "batch rank d_model"]]:
    """Per row, the factors of its edit at one layer, zero-padded to the largest rank (zeros where
    the row's edit leaves this layer alone)."""
    rank = max(d.rank for d in deltas if d is not None)
    u = torch.zeros(len(deltas) + 1, adapter.d_mlp, rank, dtype=torch.float32, device=adapter.device)
    v = torch.zeros(len(deltas) + 1, rank, adapter.d_model, dtype=torch.float32, device=adapter.device)
    for i, d in enumerate(deltas):
        if d is not None:
            u[i, :, : d.rank] = d.u.to(u)
            v[i, : d.rank] = d.v.to(v)
    index = torch.tensor([len(deltas) if r < 0 else r for r in rows], device=adapter.device)
    return u[index], v[index]


def _layer_hooks(layer: int, u: Tensor, v: Tensor, n_rows: int) -> list[Hook]:
    key: list[Tensor] = []  # one slot: the latest forward's key, so a failed forward leaves nothing behind

    def keep(act: Tensor, hook) -> Tensor:
        if act.shape[0] != n_rows:
            raise ValueError(f"per_row_edits was made for batches of {n_rows} rows; this forward has {act.shape[0]}")
        key[:] = [act]
        return act

    def add(act: Tensor, hook) -> Tensor:
        dtype = torch.promote_types(act.dtype, torch.float32)
        gain = torch.einsum("bpm,bmr->bpr", key.pop().to(u.device, dtype), u.to(dtype))
        return act + torch.einsum("bpr,brd->bpd", gain, v.to(dtype)).to(act.device, act.dtype)

    return [(hook_name("key", layer), keep), (hook_name("value", layer), add)]

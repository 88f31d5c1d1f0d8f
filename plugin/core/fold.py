"""Folding an edit into W_out, and taking it out again.

An editor returns a ``WeightEdit``: frozen ΔW_out matrices, one per layer, with the model left as
it was. ``apply_edit`` adds them in place and returns an ``EditHandle`` that keeps the original
matrices, so ``handle.revert()`` (or leaving the ``with`` block) restores them bit for bit.
Edits save to one safetensors file whose metadata holds the JSON description (no pickle).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from toplens.model import ModelAdapter, as_adapter
from toplens.core.requests import EditRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerDelta:
    """ΔW_out of one layer in TransformerLens orientation, [d_mlp, d_model]."""

    layer: int
    delta: Float[Tensor, "d_mlp d_model"]


@dataclass(frozen=True)
class WeightEdit:
    """A computed edit: the weight changes plus what produced them.

    Attributes:
        method: "rome", "top", "rets" or "memit".
        requests: the facts it rewrites.
        deltas: one ΔW_out per edited layer.
        hparams: the hyperparameters used (JSON-able).
        details: per-method diagnostics (loss curves, v*, steps); not saved to disk.
    """

    method: str
    requests: tuple[EditRequest, ...]
    deltas: tuple[LayerDelta, ...]
    hparams: dict[str, Any] = field(default_factory=dict)
    details: Any = field(default=None, repr=False, compare=False)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(d.layer for d in self.deltas)

    def save(self, path: str | Path) -> Path:
        """Write the edit to a ``.safetensors`` file (tensors + JSON metadata)."""
        path = Path(path)
        tensors = {f"delta.{i}": d.delta.detach().cpu().contiguous() for i, d in enumerate(self.deltas)}
        meta = {"method": self.method, "requests": [r.to_dict() for r in self.requests],
                "layers": list(self.layers), "hparams": self.hparams, "format": "toplens-edit/1"}
        save_file(tensors, str(path), metadata={"toplens": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "WeightEdit":
        """Read an edit written by :meth:`save`."""
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("toplens")
            if raw is None:
                raise ValueError(f"{path} is not a toplens edit (no 'toplens' metadata)")
            meta = json.loads(raw)
            deltas = tuple(LayerDelta(layer, handle.get_tensor(f"delta.{i}"))
                           for i, layer in enumerate(meta["layers"]))
        requests = tuple(EditRequest.from_dict(r) for r in meta["requests"])
        return cls(meta["method"], requests, deltas, meta.get("hparams", {}))


def rank_one_delta(
    u: Float[Tensor, " d_mlp"],
    key: Float[Tensor, " d_mlp"],
    v_target: Float[Tensor, " d_model"],
    v_current: Float[Tensor, " d_model"],
) -> Float[Tensor, "d_mlp d_model"]:
    """ΔW = u ⊗ (v* − v_cur) / (key · u), so that key · (W + ΔW) = v_cur + (v* − v_cur) = v*."""
    denominator = torch.dot(key.double(), u.double())
    if not torch.isfinite(denominator) or denominator.abs() < 1e-12:
        raise FloatingPointError(f"rank-one update is degenerate: key · u = {float(denominator):.3g}")
    return (torch.outer(u.double(), (v_target - v_current).double()) / denominator).to(u.dtype)


class EditHandle:
    """Applied edits on a model; ``revert()`` restores every touched W_out bit for bit.

    Usable as a context manager: ``with apply_edit(model, edit): ...``. Further edits can be
    stacked on the same handle with :meth:`add` (sequential editing); one revert undoes all.
    """

    def __init__(self, model):
        self.adapter: ModelAdapter = as_adapter(model)
        self.edits: list[WeightEdit] = []
        self._originals: dict[int, Tensor] = {}

    @property
    def applied(self) -> bool:
        return bool(self._originals)

    @property
    def model(self):
        return self.adapter.model

    def add(self, edit: WeightEdit) -> "EditHandle":
        """Apply ``edit`` in place (checked first, so a bad edit changes nothing)."""
        for d in edit.deltas:
            self.adapter.check_layer(d.layer, "delta.layer")
            shape = (self.adapter.d_mlp, self.adapter.d_model)
            if tuple(d.delta.shape) != shape:
                raise ValueError(f"delta for layer {d.layer} has shape {tuple(d.delta.shape)}; expected {shape}")
            if not bool(torch.isfinite(d.delta).all()):
                raise FloatingPointError(f"delta for layer {d.layer} has NaN or inf; not applied")
        with torch.no_grad():
            for d in edit.deltas:
                weight = self.adapter.w_out(d.layer)
                if d.layer not in self._originals:
                    self._originals[d.layer] = weight.detach().clone()
                weight.add_(d.delta.to(weight.device, weight.dtype))
        self.edits.append(edit)
        return self

    def revert(self) -> None:
        """Copy the original W_out matrices back (bit-exact); idempotent."""
        with torch.no_grad():
            for layer, original in self._originals.items():
                self.adapter.w_out(layer).copy_(original)
        self._originals.clear()
        self.edits.clear()

    def __enter__(self) -> "EditHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.revert()


def apply_edit(model, edit: WeightEdit | Sequence[WeightEdit]) -> EditHandle:
    """Fold one edit (or several, in order) into the model; returns the handle that undoes it."""
    handle = EditHandle(model)
    edits = [edit] if isinstance(edit, WeightEdit) else list(edit)
    try:
        for item in edits:
            handle.add(item)
    except Exception:
        handle.revert()
        raise
    return handle


def apply_sequentially(
    compute: Callable[..., WeightEdit], model, requests: EditRequest | Sequence[EditRequest], hparams, **kwargs
) -> EditHandle:
    """Compute and apply one edit per request in order, each computed on the model as edited by
    the ones before (sequential editing). On any error everything applied so far is reverted."""
    items = [requests] if isinstance(requests, EditRequest) else list(requests)
    handle = EditHandle(model)
    try:
        for request in items:
            handle.add(compute(handle.adapter, request, hparams, **kwargs))
    except Exception:
        handle.revert()
        raise
    return handle

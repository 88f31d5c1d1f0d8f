"""Low-rank weight edits: computed once, folded into W_out in place, and taken out again.

An editor returns a ``WeightEdit`` whose changes are factors, ΔW_out = U V per layer, with the
model left as it was. ``apply_edit`` adds U V in place and returns an ``EditHandle`` that keeps the
original matrices, so ``handle.revert()`` (or leaving the ``with`` block) restores them bit for
bit. Edits save to one safetensors file of factors (:mod:`toplens.core.edit_file`), tied to the
model they were computed on by a hash of its weights.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.edit_file import read_edit, write_edit
from toplens.core.requests import EditRequest
from toplens.model import ModelAdapter, as_adapter
from toplens.model.identity import weights_digest

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class LayerDelta:
    """ΔW_out of one layer as factors, ΔW = U V in TransformerLens orientation [d_mlp, d_model]:
    rank 1 for ROME, TOP and RETS, at most the number of requests for MEMIT."""

    layer: int
    u: Float[Tensor, "d_mlp rank"]
    v: Float[Tensor, "rank d_model"]

    def __post_init__(self) -> None:
        if self.u.ndim != 2 or self.v.ndim != 2 or self.u.shape[1] != self.v.shape[0]:
            raise ValueError(f"LayerDelta factors must be [d_mlp, r] and [r, d_model]; got "
                             f"{tuple(self.u.shape)} and {tuple(self.v.shape)}")

    @classmethod
    def rank_one(cls, layer: int, u: Float[Tensor, " d_mlp"], v: Float[Tensor, " d_model"]) -> "LayerDelta":
        """ΔW = u ⊗ v."""
        return cls(layer, u.detach()[:, None], v.detach()[None, :])

    @property
    def rank(self) -> int:
        return int(self.u.shape[1])

    @property
    def delta(self) -> Float[Tensor, "d_mlp d_model"]:
        """The dense ΔW = U V (the product is taken in float64, then cast to the factors' dtype)."""
        return (self.u.double() @ self.v.double()).to(self.u.dtype)

    @staticmethod
    def merge(deltas: Sequence["LayerDelta"]) -> tuple["LayerDelta", ...]:
        """One delta per layer: factors of the same layer side by side, Σ U_i V_i = [U_1 U_2 …][V_1; V_2; …]."""
        layers: dict[int, list[LayerDelta]] = {}
        for d in deltas:
            layers.setdefault(d.layer, []).append(d)
        return tuple(LayerDelta(layer, torch.cat([d.u for d in ds], 1), torch.cat([d.v for d in ds], 0))
                     for layer, ds in sorted(layers.items()))


class EditDetails:
    """Base of every editor's diagnostics (loss curves, v*, steps); not saved to disk."""

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers for reports."""
        return {}


@dataclass(frozen=True)
class SequenceDetails(EditDetails):
    """Diagnostics of requests edited one after the other, one entry per request."""

    items: tuple[EditDetails, ...]

    def summary(self) -> dict[str, Any]:
        return {"n_requests": len(self.items), "requests": [d.summary() for d in self.items]}


@dataclass(frozen=True)
class WeightEdit:
    """A computed edit: the low-rank weight changes plus what produced them.

    Attributes:
        method: the editor's name ("rome", "top", "rets", "memit").
        requests: the facts it rewrites.
        deltas: one low-rank ΔW_out per edited layer.
        hparams: the hyperparameters used (JSON-able).
        details: the editor's diagnostics (an ``EditDetails``); not saved to disk.
        model_digest: the hash of the model's weights when the edit was computed
            (:func:`toplens.model.identity.weights_digest`); applying it to a model with other
            weights needs ``force=True``. None for an edit tied to no model.
    """

    method: str
    requests: tuple[EditRequest, ...]
    deltas: tuple[LayerDelta, ...]
    hparams: dict[str, Any] = field(default_factory=dict)
    details: EditDetails | None = field(default=None, repr=False, compare=False)
    model_digest: str | None = None

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(d.layer for d in self.deltas)

    def save(self, path: str | Path) -> Path:
        """Write the edit to a ``.safetensors`` file: the factors, the JSON description and the
        hash of the model it was computed on. A non-finite edit is refused, nothing written."""
        return write_edit(self, path)

    @classmethod
    def load(cls, path: str | Path) -> "WeightEdit":
        """Read an edit written by :meth:`save` (files of the formats 2 and 1 load too, tied to no
        model); every field is checked and an error names the file."""
        return read_edit(path, cls)


class EditHandle:
    """Applied edits on a model; ``revert()`` takes them out again, in any order of handles, and
    the weights are the original ones bit for bit once every handle is reverted.

    Usable as a context manager: ``with apply_edit(model, edit): ...``. Further edits can be
    stacked on the same handle with :meth:`add` (sequential editing); one revert undoes all.
    """

    def __init__(self, model):
        self.adapter: ModelAdapter = as_adapter(model)
        self.edits: list[WeightEdit] = []
        self._originals: dict[int, Tensor] = {}
        self._added: dict[int, list[LayerDelta]] = {}

    @property
    def applied(self) -> bool:
        return bool(self._originals)

    @property
    def model(self):
        return self.adapter.model

    def add(self, edit: WeightEdit, *, force: bool = False) -> "EditHandle":
        """Apply ``edit`` in place (checked first, so a bad edit changes nothing). An edit computed
        on a model with other weights is refused unless ``force``."""
        if edit.model_digest is not None and not force:
            self._check_model(edit)
        dense = [(d, self._checked(d)) for d in edit.deltas]
        self._check_last(edit)
        before: dict[int, tuple[Tensor, int, bool]] = {}  # each layer as this call found it
        try:
            with torch.no_grad():
                for d, delta in dense:
                    self._add_one(d, delta, before)
        except BaseException:
            self._undo(before)
            raise
        self.edits.append(edit)
        return self

    def _add_one(self, d: LayerDelta, delta: Tensor, before: dict[int, tuple[Tensor, int, bool]]) -> None:
        weight = self.adapter.w_out(d.layer)
        if d.layer not in before:
            fresh = d.layer not in self._originals
            before[d.layer] = (weight.detach().clone(), len(self._added.get(d.layer, [])), fresh)
        if d.layer not in self._originals:
            self._originals[d.layer] = before[d.layer][0]
            _holders(self.adapter.model, d.layer).append(self)
        weight.add_(delta.to(weight.device, weight.dtype))
        self._added.setdefault(d.layer, []).append(d)  # factors only: U V is recomputed exactly

    def _undo(self, before: dict[int, tuple[Tensor, int, bool]]) -> None:
        """Put back every layer an interrupted :meth:`add` touched as it found them, and forget
        what the call recorded."""
        with torch.no_grad():
            for layer, (weight, count, fresh) in before.items():
                self.adapter.w_out(layer).copy_(weight)
                del self._added.setdefault(layer, [])[count:]
                if fresh:
                    self._originals.pop(layer, None)
                    self._added.pop(layer, None)
                    holders = _holders(self.adapter.model, layer)
                    if self in holders:
                        holders.remove(self)

    def _check_last(self, edit: WeightEdit) -> None:
        """Refuse to add to a layer that a later handle holds too: that handle's revert would
        restore the matrix it saw, without this addition."""
        for d in edit.deltas:
            holders = _holders(self.adapter.model, d.layer)
            if self in holders and holders[-1] is not self:
                raise ValueError(f"a handle applied later also edits layer {d.layer}; add this edit to the "
                                 "latest handle, or apply it as a new one")

    def _check_model(self, edit: WeightEdit) -> None:
        here = weights_digest(self.adapter)
        if here != edit.model_digest:
            raise ValueError(f"this {edit.method} edit was computed on the model with weights hash "
                             f"{edit.model_digest}, and this model's weights hash to {here}; "
                             "pass force=True to apply it anyway")

    def _checked(self, d: LayerDelta) -> Tensor:
        self.adapter.check_layer(d.layer, "delta.layer")
        shape = (self.adapter.d_mlp, self.adapter.d_model)
        if (d.u.shape[0], d.v.shape[1]) != shape:
            raise ValueError(f"delta for layer {d.layer} has shape {(d.u.shape[0], d.v.shape[1])}; expected {shape}")
        delta = d.delta
        if not bool(torch.isfinite(delta).all()):
            raise FloatingPointError(f"delta for layer {d.layer} has NaN or inf; not applied")
        return delta

    def revert(self) -> None:
        """Undo this handle's edits; idempotent, and correct in any order of several handles.

        The last handle applied to a layer copies back the matrix it saw (bit-exact, so reverting
        every handle in any order ends at the original weights exactly). A handle reverted while a
        later one still holds the layer subtracts its own ΔW instead; the next handle takes over
        this one's exact copy, and the ones after it have this ΔW taken out of theirs."""
        with torch.no_grad():
            for layer in list(self._originals):
                self._revert_layer(layer)
                del self._originals[layer]  # only once the layer is done, so an interrupted revert resumes
        self._added.clear()
        self.edits.clear()

    def _revert_layer(self, layer: int) -> None:
        holders = _holders(self.adapter.model, layer)
        if self not in holders:  # done by an earlier, interrupted revert
            return
        later = holders[holders.index(self) + 1:]
        weight = self.adapter.w_out(layer)
        if not later:
            weight.copy_(self._originals[layer])
        else:
            own = torch.stack([d.delta for d in self._added[layer]]).sum(0).to(weight.device, weight.dtype)
            weight.sub_(own)
            later[0]._originals[layer] = self._originals[layer]
            for other in later[1:]:
                other._originals[layer].sub_(own)
        holders.remove(self)

    def __enter__(self) -> "EditHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.revert()


_HOLDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _holders(model, layer: int) -> list["EditHandle"]:
    """The handles holding edits of ``layer`` of ``model``, in the order they were applied."""
    return _HOLDERS.setdefault(model, {}).setdefault(layer, [])


def apply_edit(model, edit: WeightEdit | Sequence[WeightEdit], *, force: bool = False) -> EditHandle:
    """Fold one edit (or several, in order) into the model; returns the handle that undoes it.
    Each edit must have been computed on the model as it is when it is applied (its weights hash),
    unless ``force``."""
    handle = EditHandle(model)
    edits = [edit] if isinstance(edit, WeightEdit) else list(edit)
    try:
        for item in edits:
            handle.add(item, force=force)
    except BaseException:
        handle.revert()
        raise
    return handle


def apply_sequentially(compute: Callable[..., WeightEdit], model, requests: Sequence[EditRequest], hparams,
                       **kwargs) -> EditHandle:
    """Compute and apply one edit per request in order, each computed on the model as edited by
    the ones before (sequential editing). On any exit by exception, interrupts included,
    everything applied so far is reverted."""
    handle = EditHandle(model)
    try:
        for request in requests:
            handle.add(compute(handle.adapter, request, hparams, **kwargs))
    except BaseException:
        handle.revert()
        raise
    return handle

"""The editor interface. Every editor module has the same shape: a hyperparameter dataclass, a
function that computes the edit of ONE request (or, for a batched editor, of all of them), a
description of its optimization stages, and an ``EDITOR`` built from them here. ``Editor`` adds
what is the same for every method: taking one request or a sequence, checking the hyperparameters,
the sequential composition of single-request editors, and applying.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from toplens.core.edits import EditHandle, LayerDelta, SequenceDetails, WeightEdit, apply_sequentially
from toplens.core.hparams import Hparams
from toplens.core.keys import Role
from toplens.core.precision import resolve_precision
from toplens.core.requests import EditRequest
from toplens.core.stages import Observer, Stage
from toplens.model import ModelAdapter, as_adapter
from toplens.model.identity import weights_digest

Requests = EditRequest | Sequence[EditRequest]


def as_requests(requests: Requests) -> tuple[EditRequest, ...]:
    """One request or a sequence of them, as a non-empty tuple of ``EditRequest``."""
    items = (requests,) if isinstance(requests, EditRequest) else tuple(requests)
    if not items:
        raise ValueError("requests must hold at least one EditRequest; got an empty sequence")
    for i, item in enumerate(items):
        if not isinstance(item, EditRequest):
            raise TypeError(f"requests[{i}] must be an EditRequest; got {type(item).__name__}")
    return items


@dataclass(frozen=True)
class Editor:
    """One editing method behind the common interface.

    Attributes:
        name: the method's name ("rome", "top", "rets", "memit").
        hparams_type: its hyperparameter dataclass (its defaults are the published values).
        compute_edit: ``(adapter, request, hparams, *, observe, **options) -> WeightEdit`` for one
            request, or, when ``batched``, ``(adapter, requests, hparams, ...)`` for all of them.
        describe: the optimization stages the editor runs under some hyperparameters.
        batched: whether one computation edits every request together (MEMIT); otherwise a
            sequence is edited one request after the other, each seeing the earlier edits.
        settle_for: ``(adapter, request, hparams) -> hparams`` with every per-request choice made
            (TOP's ``rel_feat_layer="auto"``); None when the settings need none.
        fold_role: the token whose key the edit maps ("subject"; RETS: "relation", the last token),
            the key a sequential run's null-space projection keeps later edits off.
    """

    name: str
    hparams_type: type[Hparams]
    compute_edit: Callable[..., WeightEdit]
    describe: Callable[[Any], tuple[Stage, ...]]
    batched: bool = False
    settle_for: Callable[[ModelAdapter, EditRequest, Any], Hparams] | None = None
    fold_role: Role = "subject"

    def compute(self, model, requests: Requests, hparams: Hparams | None = None, *,
                observe: Observer | None = None, **options) -> WeightEdit:
        """The edit of ``requests``; the model is left unchanged (any temporary application is
        reverted on every exit). ``observe(stage, event)`` sees every optimization step. The edit
        records the hash of the model's weights, which applying it checks, and its hparams as they
        ran (``precision="auto"`` resolved for this device, TOP's automatic la settled)."""
        adapter, items, hp = self._prepare(model, requests, hparams)
        digest = weights_digest(adapter)
        edit = self._compute(adapter, items, hp, observe, options)
        ran = {**edit.hparams, "precision": resolve_precision(adapter, hp.precision)}
        return replace(edit, model_digest=digest, hparams=ran)

    def _compute(self, adapter: ModelAdapter, items: tuple[EditRequest, ...], hp: Hparams,
                 observe: Observer | None, options: dict[str, Any]) -> WeightEdit:
        if self.batched:
            return self.compute_edit(adapter, items, hp, observe=observe, **options)
        if len(items) == 1:
            return self.compute_edit(adapter, items[0], hp, observe=observe, **options)
        edits = []
        with EditHandle(adapter) as handle:
            for request in items:
                edits.append(self.compute_edit(adapter, request, hp, observe=observe, **options))
                handle.add(edits[-1])
        deltas = LayerDelta.merge([d for e in edits for d in e.deltas])
        return WeightEdit(self.name, items, deltas, hp.to_dict(), SequenceDetails(tuple(e.details for e in edits)))

    def apply(self, model, requests: Requests, hparams: Hparams | None = None, **options) -> EditHandle:
        """Compute and apply: a batched editor's one edit, or one edit per request in sequence.
        Returns the handle; ``handle.revert()`` restores the original weights bit for bit."""
        adapter, items, hp = self._prepare(model, requests, hparams)
        if not self.batched:
            return apply_sequentially(lambda a, r, h: self.compute_edit(a, r, h, **options), adapter, items, hp)
        handle = EditHandle(adapter)
        try:
            return handle.add(self.compute_edit(adapter, items, hp, **options))
        except BaseException:
            handle.revert()
            raise

    def settle(self, model, request: EditRequest, hparams: Hparams | None = None) -> Hparams:
        """The hyperparameters as they run for ``request`` (per-request choices made, such as
        TOP's automatic la), so that ``stages`` can describe them."""
        hp = self._checked(hparams)
        return hp if self.settle_for is None else self.settle_for(as_adapter(model), request, hp)

    def stages(self, hparams: Hparams | None = None) -> tuple[Stage, ...]:
        """The stages ``compute`` runs, in order, as data (for each edit layer where it has several)."""
        return self.describe(self._checked(hparams))

    def _checked(self, hparams: Hparams | None) -> Hparams:
        hp = self.hparams_type() if hparams is None else hparams
        if not isinstance(hp, self.hparams_type):
            raise TypeError(f"hparams for {self.name!r} must be a {self.hparams_type.__name__}; "
                            f"got {type(hp).__name__}")
        return hp

    def _prepare(self, model, requests: Requests, hparams: Hparams | None):
        adapter: ModelAdapter = as_adapter(model)
        adapter.require_mlp()
        hp = self._checked(hparams)
        for layer in hp.edit_layers:
            adapter.check_layer(layer, f"{type(hp).__name__}.{hp.layers_field}")
        return adapter, as_requests(requests), hp

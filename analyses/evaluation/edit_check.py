"""One edit (or a batch) checked end to end: the model before, during the edit, and after its revert.

What ``toplens edit`` shows: P(target_new), P(target_true) and the top next tokens before the edit
and while it is applied, and whether reverting it restored every parameter bit for bit (a sha256
of all of them, taken before and after).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from toplens import EditRequest, WeightEdit, apply_edit, as_adapter
from toplens.core.hparams import Hparams
from toplens.core.scoring import target_probability, top_tokens
from toplens.editors import get_editor
from toplens.model import ModelAdapter
from toplens.model.identity import weights_digest

TOP_K = 5  # next tokens shown


@dataclass(frozen=True)
class Snapshot:
    """What the model says for a request's prompt: P(target_new), P(target_true), the top tokens."""

    p_new: float
    p_true: float | None
    top: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"p_new": self.p_new, "p_true": self.p_true, "top5": [{"token": t, "prob": p} for t, p in self.top]}


def snapshot(model, request: EditRequest) -> Snapshot:
    """The model's :class:`Snapshot` for ``request`` as it is now."""
    p_true = target_probability(model, request.text, request.target_true) if request.target_true else None
    top = tuple((t.token, t.prob) for t in top_tokens(model, request.text, TOP_K))
    return Snapshot(target_probability(model, request.text, request.target_new), p_true, top)


def _all_hashes(adapter: ModelAdapter) -> str:
    """A hash of every parameter and buffer, bit for bit (the revert check compares all of them)."""
    return weights_digest(adapter)


@dataclass(frozen=True)
class EditCheck:
    """One computed edit: its time, the model before and while applied, and the revert check."""

    edit: WeightEdit
    request: EditRequest
    model: str
    backend: str
    seconds: float
    before: Snapshot
    after: Snapshot
    restored: bool

    def to_json(self) -> dict[str, Any]:
        """The report of ``toplens edit --json``; the editor's own summary is merged in."""
        edit = self.edit
        report: dict[str, Any] = {
            "method": edit.method, "model": self.model, "backend": self.backend,
            "layer": edit.layers[0] if len(edit.layers) == 1 else list(edit.layers),
            "request": self.request.to_dict(), "seconds": round(self.seconds, 3),
            "pre": self.before.to_dict(), "post": self.after.to_dict(), "restored_bitexact": self.restored,
        }
        if edit.details is not None:
            report.update(edit.details.summary())
        return report


def check_edit(model, method: str, request: EditRequest, hparams: Hparams, *,
               save: str | Path | None = None) -> EditCheck:
    """Compute ``method``'s edit of ``request`` (saved to ``save`` if given), measure the model
    before and while it is applied, revert it and check that every weight is as it was (a hash of all of them)."""
    adapter = as_adapter(model)
    before = snapshot(adapter, request)
    hashes = _all_hashes(adapter)
    start = time.perf_counter()
    edit = get_editor(method).compute(adapter, request, hparams)
    seconds = time.perf_counter() - start
    with apply_edit(adapter, edit):  # checks the edit (finite, right shapes) before anything is saved
        after = snapshot(adapter, request)
    if save:
        edit.save(save)
    return EditCheck(edit, request, adapter.name, adapter.backend, seconds, before, after,
                     _all_hashes(adapter) == hashes)


@dataclass(frozen=True)
class BatchCheck:
    """A batch edited together: the time, each request before and while applied, the revert check."""

    method: str
    model: str
    backend: str
    requests: tuple[EditRequest, ...]
    seconds: float
    before: tuple[Snapshot, ...]
    after: tuple[Snapshot, ...]
    restored: bool
    n_edits: int

    def to_json(self) -> dict[str, Any]:
        """The report of ``toplens edit --requests FILE --json``."""
        rows = [{"request": r.to_dict(), "pre": b.to_dict(), "post": a.to_dict(),
                 "success": a.p_true is None or a.p_new > a.p_true}
                for r, b, a in zip(self.requests, self.before, self.after)]
        return {"method": self.method, "model": self.model, "backend": self.backend,
                "n_requests": len(self.requests), "weight_edits": self.n_edits, "seconds": round(self.seconds, 3),
                "n_success": sum(row["success"] for row in rows), "restored_bitexact": self.restored,
                "requests": rows}


def check_batch(model, method: str, requests: Sequence[EditRequest], hparams: Hparams) -> BatchCheck:
    """Apply ``method`` to every request (MEMIT at once, the others in sequence), measure each
    before and while applied, revert, and check that every weight is as it was (a hash of all of them)."""
    adapter = as_adapter(model)
    requests = tuple(requests)
    before = tuple(snapshot(adapter, r) for r in requests)
    hashes = _all_hashes(adapter)
    start = time.perf_counter()
    with get_editor(method).apply(adapter, requests, hparams) as handle:
        seconds = time.perf_counter() - start
        after = tuple(snapshot(adapter, r) for r in requests)
        n_edits = len(handle.edits)
    return BatchCheck(method, adapter.name, adapter.backend, requests, seconds, before, after,
                      _all_hashes(adapter) == hashes, n_edits)

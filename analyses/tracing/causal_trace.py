"""Causal tracing (Meng et al., 2022), as the paper uses it to locate where a fact is recalled.

Corrupt the subject (:mod:`toplens.core.corruption`). Then restore one clean activation
m_{l,i} — the residual after block l (``"resid"``), or the MLP output (``"mlp"``) or attention
output (``"attn"``) of a window of layers around l, as ROME's tracing does — at one token
position i, and measure

    IE(o, θ, m_{l,i}) = P(o | corrupted, m_{l,i} restored) − P(o | corrupted),

averaged over the noise samples; P is the probability of the answer's first token at the last
prompt position. The grid of cells runs batched (:mod:`toplens.analyses.tracing.grid`).

The model is used as it is: trace an edited model by applying the edit first
(``with apply_edit(model, edit): causal_trace(...)``) and asking for o*, or call
:func:`trace_edit`, which traces o before and o* during an edit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from jaxtyping import Float
from torch import Tensor

from toplens.core.hparams import Hparams
from toplens.core.requests import EditRequest
from toplens.editors import get_editor
from toplens.editors.presets import preset_or_given
from toplens.model import as_adapter

from toplens.core.corruption import (DEFAULT_SAMPLES, DEFAULT_WINDOW, KINDS, MAX_ROWS, NOISE_FACTOR,
                                                 Corruption, TraceKind, check_kind, clean_prob, corrupted_prob,
                                                 make_corruption)
from toplens.analyses.tracing.grid import batched_probs, reference_probs
from toplens.analyses.tracing.maps import LayerPositionMap, token_labels

logger = logging.getLogger(__name__)

def _check_indices(values: Sequence[int], bound: int, field: str) -> list[int]:
    out = list(values)
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < bound:
            raise ValueError(f"{field} must hold ints in [0, {bound}); got {v!r}")
    return out


def indirect_effects(
    model, corruption: Corruption, kind: TraceKind = "resid", *, layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None, window: int = DEFAULT_WINDOW, batched: bool = True,
    max_rows: int = MAX_ROWS, progress: bool = False, base_prob: float | None = None, use_prefix: bool = True,
) -> Float[Tensor, "layer pos"]:
    """IE of restoring each (layer, position) cell: P(o | corrupted, restored) − P(o | corrupted).

    ``layers`` / ``positions`` (default all) choose the grid; ``batched=False`` runs the
    one-cell-at-a-time reference. Batched forwards hold at most ``max_rows`` rows (cells ×
    samples; at least one cell) and skip the blocks below their lowest restored layer; cells
    before the subject are 0 without a forward (the noise cannot reach them: their corrupted
    states are the clean ones). Where the backend has a key/value cache (HookedTransformer) and
    ``use_prefix`` is true, the cells of each position run only the positions from theirs on,
    block by block, each cell's rows joining at its :func:`~analyses.tracing.grid.entry_layer`
    (:func:`~analyses.tracing.grid.suffix_answer_probs`). ``base_prob`` is P(o | corrupted) if already known.
    """
    adapter = as_adapter(model)
    check_kind(kind)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int; got {window!r}")
    layers = _check_indices(range(adapter.n_layers) if layers is None else layers, adapter.n_layers, "layers")
    positions = _check_indices(range(corruption.n_positions) if positions is None else positions,
                               corruption.n_positions, "positions")
    base = corrupted_prob(adapter, corruption) if base_prob is None else base_prob
    cells = [(layer, position) for layer in layers for position in positions]
    if batched:
        probs = batched_probs(adapter, corruption, kind, window, cells, max_rows, progress, base, use_prefix)
    else:
        probs = reference_probs(adapter, corruption, kind, window, cells, progress)
    return (probs - base).view(len(layers), len(positions))


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class TraceResult:
    """A causal trace of one prompt.

    Attributes:
        effects: IE per (layer, position), with the prompt's tokens and roles.
        kind: "resid", "mlp" or "attn"; window: layers restored together (mlp / attn).
        answer, answer_id: the traced answer and its first token.
        clean_prob, corrupted_prob: P(answer) clean and corrupted (mean over samples).
        noise_std, n_samples, seed: the corruption.
    """

    effects: LayerPositionMap
    kind: str
    window: int
    answer: str
    answer_id: int
    clean_prob: float
    corrupted_prob: float
    noise_std: float
    n_samples: int
    seed: int

    def peak(self) -> dict[str, Any]:
        """The cell of the largest IE: layer, position, token, role and the IE."""
        values = self.effects.values
        flat = int(values.argmax())
        layer, position = divmod(flat, values.shape[1])
        return {"layer": layer, "position": position, "token": self.effects.tokens[position],
                "role": self.effects.roles[position], "ie": float(values[layer, position])}

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: the IE grid (layer-major), tokens, roles and the run's settings."""
        return {"kind": self.kind, "window": self.window, "answer": self.answer, "answer_id": self.answer_id,
                "clean_prob": self.clean_prob, "corrupted_prob": self.corrupted_prob,
                "noise_std": self.noise_std, "n_samples": self.n_samples, "seed": self.seed,
                "tokens": list(self.effects.tokens), "roles": list(self.effects.roles),
                "indirect_effect": self.effects.values.tolist(), "peak": self.peak()}



def causal_trace(
    model, prompt: str, subject: str, answer: str, *, kind: TraceKind = "resid", n_samples: int = DEFAULT_SAMPLES,
    window: int = DEFAULT_WINDOW, noise_std: float | None = None, noise_factor: float = NOISE_FACTOR,
    seed: int = 0, batched: bool = True, max_rows: int = MAX_ROWS, progress: bool = False,
) -> TraceResult:
    """Causal trace of ``prompt.format(subject)`` → ``answer`` over every layer and position.

    Args:
        model: a TransformerLens model or adapter, edited or not (hooks the user has active stay).
        prompt: a template with one ``{}`` for the subject; subject: the corrupted subject.
        answer: o (or o* on an edited model), with its leading space; its first token is traced.
        kind: "resid" (residual after block l), "mlp" or "attn" (outputs over ``window`` layers).
        n_samples: noise samples; noise_std / noise_factor / seed: the corruption (see
            :func:`make_corruption`); batched / max_rows / progress: see :func:`indirect_effects`.
    """
    adapter = as_adapter(model)
    check_kind(kind)
    corruption = make_corruption(adapter, prompt, subject, answer, n_samples=n_samples, noise_std=noise_std,
                                 noise_factor=noise_factor, seed=seed)
    base = corrupted_prob(adapter, corruption)
    values = indirect_effects(adapter, corruption, kind, window=window, batched=batched, max_rows=max_rows,
                              progress=progress, base_prob=base)
    tokens, roles = token_labels(adapter, corruption.positions)
    span = f"window {window}" if kind != "resid" else "one layer"
    title = f"IE on P({answer!r}) of restoring {kind} ({span})"
    effects = LayerPositionMap(values, tokens, roles, "indirect_effect", title)
    logger.debug("traced %s of %r -> %r: corrupted P %.4g", kind, corruption.positions.tokens, answer, base)
    return TraceResult(effects, kind, window, answer, corruption.answer_id, clean_prob(adapter, corruption), base,
                       corruption.noise_std, n_samples, seed)


def causal_traces(model, prompt: str, subject: str, answer: str, kinds: Sequence[str] = KINDS,
                  **options: Any) -> dict[str, TraceResult]:
    """:func:`causal_trace` for several kinds (the same noise, as the seed is shared)."""
    return {kind: causal_trace(model, prompt, subject, answer, kind=check_kind(kind), **options) for kind in kinds}


# ----------------------------------------------------------------------- before and after an edit
@dataclass(frozen=True)
class EditTrace:
    """Causal traces of one request on the original model (answer o) and during an edit (o*).

    Attributes:
        request: the fact; method: the editor applied for ``after`` (None: the original model only).
        edit_layer: the edit's (first) edit layer, to mark in figures; None without an edit.
        before: one trace per kind of o on the original model (empty without ``target_true``).
        after: one trace per kind of o* with the edit applied (empty without ``method``).
    """

    request: EditRequest
    method: str | None
    edit_layer: int | None
    before: tuple[TraceResult, ...]
    after: tuple[TraceResult, ...]

    def to_json(self) -> dict[str, Any]:
        return {"request": self.request.to_dict(), "method": self.method,
                "before": {r.kind: r.to_json() for r in self.before},
                "after": {r.kind: r.to_json() for r in self.after}}


def trace_edit(
    model, request: EditRequest, kinds: Sequence[str] = KINDS, method: str | None = None,
    hparams: Hparams | None = None, **options: Any,
) -> EditTrace:
    """Trace o on the model as it is and, when ``method`` is given, o* while its edit is applied.

    Args:
        model: a TransformerLens model or adapter (the edit is reverted before this returns).
        request: the fact; o = ``target_true`` (needed unless only the edited model is traced).
        kinds: what is restored ("resid", "mlp", "attn"); method / hparams: the edit (default:
            the method's preset for this model).
        options: :func:`causal_trace`'s keyword arguments (n_samples, window, noise_std, seed...).
    """
    kinds = [check_kind(kind) for kind in kinds]
    editor = None if method is None else get_editor(method)
    if request.target_true is None and editor is None:
        raise ValueError("request.target_true is needed to trace the original model's answer o")
    trace = lambda answer: tuple(causal_trace(model, request.prompt, request.subject, answer,  # noqa: E731
                                              kind=kind, **options) for kind in kinds)
    before = trace(request.target_true) if request.target_true else ()
    if editor is None:
        return EditTrace(request, None, None, before, ())
    adapter = as_adapter(model)
    hp = preset_or_given(method, hparams, adapter.name, adapter.n_layers)
    with editor.apply(adapter, request, hp):
        after = trace(request.target_new)
    layer = hp.edit_layers[0]
    return EditTrace(request, method, layer, before, after)

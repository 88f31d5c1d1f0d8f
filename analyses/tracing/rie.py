"""RIE, the relative indirect effect: how much more an edited fact leans on a position than the
original fact did (the paper's shortcut measure).

For each request and layer l, MLP-out causal tracing (a window of layers, see
:mod:`toplens.analyses.tracing.causal_trace`) gives IE(o, θ_original) on the unedited model and IE(o*, θ_edited)
with the edit applied, at the last subject token and the last relation token. Then

    RIE = log[ IE(o*, θ_edited) / IE(o, θ_original) ].

Definition used here (the paper gives only the ratio): per request and position, each IE is
taken at its peak over layers (max_l IE, as ROME summarizes a trace by its strongest layer), the
log ratio is formed, and the rows report the mean over requests. IEs that are not positive are
clamped to ``epsilon`` before the log; the report counts how many were. The per-layer log ratio
(mean over requests) is kept in the report as well. The paper (GPT-J) reports ROME 4.6 subject /
2.2 relation and TOP 2.0 / 1.7: ROME's edit leans far more on the subject than the original
fact did; TOP balances subject and relation. Each row's subject and relation means come with a
95% percentile bootstrap interval over requests (2000 draws, seed 0).

Each edit is applied with its editor's ``apply`` (a reversible handle) and reverted before the
next request, so the model ends bit for bit as it began.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from toplens.core.hparams import Hparams
from toplens.core.requests import EditRequest
from toplens.editors import get_editor
from toplens.editors.presets import preset_or_given
from toplens.model import ModelAdapter, as_adapter

from toplens.analyses.evaluation.intervals import DRAWS, SEED, Bounds, bootstrap_mean
from toplens.analyses.tracing.causal_trace import indirect_effects
from toplens.core.corruption import (DEFAULT_SAMPLES, DEFAULT_WINDOW, NOISE_FACTOR, embedding_std,
                                                 make_corruption, subject_token_ids)

logger = logging.getLogger(__name__)

EPSILON = 1e-4
POSITIONS = ("subject", "relation")


@dataclass(frozen=True)
class RieRow:
    """RIE of one method over a set of requests, at the last subject and last relation tokens: the
    means over requests and their 95% bootstrap intervals over requests (None when not computed)."""

    method: str
    subject: float
    relation: float
    n: int
    subject_ci: Bounds | None = None
    relation_ci: Bounds | None = None

    def to_json(self) -> dict[str, Any]:
        ci = lambda b: None if b is None else b.to_json()  # noqa: E731
        return {"method": self.method, "subject": self.subject, "relation": self.relation, "n": self.n,
                "subject_ci": ci(self.subject_ci), "relation_ci": ci(self.relation_ci)}


@dataclass(frozen=True)
class TraceSettings:
    """MLP-out tracing settings shared by every trace of a report."""

    n_samples: int = DEFAULT_SAMPLES
    window: int = DEFAULT_WINDOW
    noise_std: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class RequestRie:
    """One request under one method.

    Attributes:
        ie_original: IE(o, θ_original) per layer at [last subject, last relation].
        ie_edited: IE(o*, θ_edited), same layout.
        subject, relation: the log ratio of the peak-over-layers IEs.
        per_layer: the log ratio per layer (clamped IEs).
        clamped: how many of the four peak IEs entering ``subject`` / ``relation`` were clamped
            to epsilon; clamped_per_layer: the same count over the per-layer IEs.
    """

    request: EditRequest
    method: str
    ie_original: Float[Tensor, "layer 2"]
    ie_edited: Float[Tensor, "layer 2"]
    subject: float
    relation: float
    per_layer: Float[Tensor, "layer 2"]
    clamped: int
    clamped_per_layer: int

    def to_json(self) -> dict[str, Any]:
        return {"request": self.request.to_dict(), "method": self.method, "subject": self.subject,
                "relation": self.relation, "clamped": self.clamped,
                "clamped_per_layer": self.clamped_per_layer,
                "ie_original": self.ie_original.tolist(), "ie_edited": self.ie_edited.tolist(),
                "per_layer": self.per_layer.tolist()}


@dataclass(frozen=True)
class RieReport:
    """RIE per method (rows) and per request (details)."""

    rows: list[RieRow]
    details: list[RequestRie] = field(repr=False)
    epsilon: float
    settings: TraceSettings
    noise_std: float

    @property
    def n_clamped(self) -> int:
        return sum(d.clamped for d in self.details)

    def per_layer(self, method: str) -> Float[Tensor, "layer 2"]:
        """The per-layer RIE of ``method`` (mean over requests), columns subject / relation."""
        rows = [d.per_layer for d in self.details if d.method == method]
        if not rows:
            raise ValueError(f"method {method!r} is not in this report")
        return torch.stack(rows).mean(0)

    def to_json(self) -> dict[str, Any]:
        return {"definition": "mean over requests of log(max_l IE(o*, edited) / max_l IE(o, original)), "
                              "MLP-out tracing", "epsilon": self.epsilon, "n_clamped": self.n_clamped,
                "noise_std": self.noise_std, "settings": asdict(self.settings),
                "intervals": f"95% percentile bootstrap over requests, {DRAWS} draws, seed {SEED}",
                "rows": [r.to_json() for r in self.rows],
                "per_layer": {r.method: self.per_layer(r.method).tolist() for r in self.rows},
                "details": [d.to_json() for d in self.details]}

    def table(self) -> str:
        """Subject and relation RIE per method with their 95% intervals over requests, as text."""
        cell = lambda v, b: f"{v:.2f}" + ("" if b is None else f" [{b.low:.2f}, {b.high:.2f}]")  # noqa: E731
        lines = [f"{'method':10}{'n':>5}{'subject':>22}{'relation':>22}"]
        lines += [f"{r.method:10}{r.n:>5}{cell(r.subject, r.subject_ci):>22}{cell(r.relation, r.relation_ci):>22}"
                  for r in self.rows]
        lines.append("(95% bootstrap interval over requests in brackets)")
        lines.append(f"({self.n_clamped} non-positive peak IEs clamped to {self.epsilon:g})")
        return "\n".join(lines)


# --------------------------------------------------------------------------- tracing
def focus_effects(
    adapter: ModelAdapter, request: EditRequest, answer: str, settings: TraceSettings, noise_std: float,
) -> Float[Tensor, "layer 2"]:
    """MLP-out IE per layer at the last subject and last relation tokens for ``answer``."""
    corruption = make_corruption(adapter, request.prompt, request.subject, answer, n_samples=settings.n_samples,
                                 noise_std=noise_std, seed=settings.seed)
    pos = corruption.positions
    return indirect_effects(adapter, corruption, "mlp", positions=[pos.last_subject, pos.last_relation],
                            window=settings.window)


def log_ratio(edited: Tensor, original: Tensor, epsilon: float) -> tuple[Tensor, int]:
    """log(edited / original) with both clamped below at ``epsilon``; also how many were clamped."""
    clamped = int((edited < epsilon).sum() + (original < epsilon).sum())
    return (edited.clamp_min(epsilon) / original.clamp_min(epsilon)).log(), clamped


def request_rie(request: EditRequest, method: str, original: Tensor, edited: Tensor, epsilon: float) -> RequestRie:
    """RIE of one request from its two traces: peak over layers, then the log ratio."""
    peak, clamped_peak = log_ratio(edited.max(0).values, original.max(0).values, epsilon)
    per_layer, clamped_layers = log_ratio(edited, original, epsilon)
    return RequestRie(request, method, original, edited, float(peak[0]), float(peak[1]), per_layer,
                      clamped_peak, clamped_layers)


def summarize(details: Sequence[RequestRie], methods: Sequence[str]) -> list[RieRow]:
    """One row per method: the mean RIE over its requests and its bootstrap interval over them."""
    return [summarize_method(method, [d for d in details if d.method == method]) for method in methods]


def summarize_method(method: str, mine: Sequence[RequestRie]) -> RieRow:
    """The mean subject and relation RIE over ``mine`` with their 95% bootstrap intervals over
    requests (NaN means and no intervals without requests; a NaN log ratio is left out, with a warning)."""
    if not mine:
        return RieRow(method, math.nan, math.nan, 0)
    values = [np.array([getattr(d, name) for d in mine], dtype=float) for name in POSITIONS]
    if undefined := sum(int(np.isnan(v).sum()) for v in values):
        logger.warning("RIE of %s: %d NaN log ratios left out of the means", method, undefined)
    subject, relation = (bootstrap_mean(v) for v in values)
    return RieRow(method, float(subject.value[0]), float(relation.value[0]), len(mine),
                  Bounds.columns(subject)[0], Bounds.columns(relation)[0])


# ----------------------------------------------------------------------------- entry
def _hparams(adapter: ModelAdapter, methods: Sequence[str], given: Mapping[str, Hparams] | None) -> dict[str, Hparams]:
    given = dict(given or {})
    unknown = sorted(set(given) - set(methods))
    if unknown:
        raise ValueError(f"hparams names methods not in methods: {unknown}")
    for method in methods:
        get_editor(method)  # a clear error for an unknown method
    return {m: preset_or_given(m, given.get(m), adapter.name, adapter.n_layers) for m in methods}


def _check_requests(requests: Sequence[EditRequest]) -> list[EditRequest]:
    items = [requests] if isinstance(requests, EditRequest) else list(requests)
    if not items:
        raise ValueError("requests is empty: RIE needs at least one request")
    for request in items:
        if request.target_true is None:
            raise ValueError(f"EditRequest.target_true is None for {request.text!r}: RIE traces the original "
                             "object o on the unedited model")
    return items


def relative_indirect_effects(
    model, requests: EditRequest | Sequence[EditRequest], methods: Sequence[str] = ("rome", "top"),
    hparams: Mapping[str, Hparams] | None = None, *, n_samples: int = DEFAULT_SAMPLES,
    window: int = DEFAULT_WINDOW, noise_std: float | None = None, seed: int = 0, epsilon: float = EPSILON,
    templates: Sequence[str] | None = None, progress: bool = False,
) -> RieReport:
    """RIE at the last subject and last relation tokens for each method over ``requests``.

    Args:
        model: a TransformerLens model or adapter (left bit for bit as it was).
        requests: facts with ``target_true`` (o) and ``target_new`` (o*).
        methods: editing methods; hparams: per-method hyperparameters (default: presets).
        n_samples, window, seed: the MLP-out tracing; noise_std: default 3 × the std of the
            embedding rows of all the requests' subject tokens (one level for the whole set).
        epsilon: the clamp for non-positive IEs; templates: context templates for the editors.
    """
    adapter = as_adapter(model)
    items = _check_requests(requests)
    hps = _hparams(adapter, methods, hparams)
    if noise_std is None:
        ids = [t for r in items for t in subject_token_ids(adapter, r.prompt, r.subject)]
        noise_std = NOISE_FACTOR * embedding_std(adapter, ids)
    settings = TraceSettings(n_samples, window, noise_std, seed)
    extra = {} if templates is None else {"templates": tuple(templates)}
    details = []
    for request in tqdm(items, desc="RIE", disable=not progress):
        original = focus_effects(adapter, request, request.target_true, settings, noise_std)
        for method in methods:
            with get_editor(method).apply(adapter, request, hps[method], **extra):
                edited = focus_effects(adapter, request, request.target_new, settings, noise_std)
            details.append(request_rie(request, method, original, edited, epsilon))
    report = RieReport(summarize(details, methods), details, epsilon, settings, noise_std)
    if report.n_clamped:
        logger.info("RIE: %d non-positive IEs clamped to %g", report.n_clamped, epsilon)
    return report

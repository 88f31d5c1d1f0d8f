"""MEMIT (Meng et al., 2023): many facts at once, spread over several layers' W_out.

1. For each request, optimize δ added to the residual after the LAST edit layer L
   (``hook_resid_post``) at the last subject token of every rewriting prompt (ROME's objective,
   role ``"subject"``): the target residual z = h_init + δ.
2. For each edit layer l in order, with the earlier layers' updates applied:
   K = keys at l (mean over context templates, last subject token), one row per request;
   R = (z − h_L) / (layers left, this one included), h_L the current residual at L;
   ΔW_l = (λC + KᵀK)⁻¹ KᵀR, in TransformerLens orientation [d_mlp, d_model].
   That ΔW_l is the minimizer of ‖K(W + Δ) − (KW + R)‖² + λ·tr(Δᵀ C Δ) (see :func:`solve_update`).

``compute_memit`` returns one ``WeightEdit`` with a ΔW per layer and leaves the model unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.fold import EditHandle, LayerDelta, WeightEdit
from toplens.core.hparams import Hparams, HparamsError
from toplens.core.keys import mean_key
from toplens.model import ModelAdapter, as_adapter, hook_name
from toplens.core.objective import RewriteObjective, rewrite_batch
from toplens.core.optimize import LoopSettings, OptimizationTrace, StepEvent, optimize
from toplens.core.positions import locate
from toplens.core.requests import EditRequest
from toplens.core.templates import context_templates
from toplens.editors.rome import second_moment_or_identity


@dataclass(frozen=True)
class MemitHparams(Hparams):
    """MEMIT's hyperparameters; the defaults are the published GPT2-XL values.

    ``mom2_update_weight`` is λ: how strongly the keys' second moment C holds W_out in place. It
    is on C's scale (C = E[k kᵀ], a per-token mean); with ``mom2_adjustment=False`` C is the
    identity and a far smaller λ fits.
    """

    layers: tuple[int, ...] = (13, 14, 15, 16, 17)
    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    early_stop_loss: float = 5e-2
    kl_prompt: str = "{} is a"
    mom2_adjustment: bool = True
    mom2_update_weight: float = 20000.0
    context_lengths: tuple[tuple[int, int], ...] = ((10, 5), (10, 10))

    def __post_init__(self) -> None:
        self._layers("layers")
        if list(self.layers) != sorted(set(self.layers)):
            raise HparamsError(f"MemitHparams.layers must be strictly increasing; got {self.layers!r}")
        self._value_optimization("mom2_update_weight")


@dataclass(frozen=True)
class TargetResult:
    """The optimized residual at the last edit layer for one request: z = h_init + δ."""

    h_init: Float[Tensor, " d_model"]
    z: Float[Tensor, " d_model"]
    trace: OptimizationTrace
    target_prob: float


@dataclass(frozen=True)
class LayerStep:
    """One layer's solve: the mean ‖z − h_L‖ before it and the mean ‖R‖ it was asked to write."""

    layer: int
    remaining: float
    residual: float


@dataclass(frozen=True)
class MemitDetails:
    """Diagnostics of one MEMIT batch: a target per request, a solve per layer."""

    targets: tuple[TargetResult, ...]
    steps: tuple[LayerStep, ...]
    remaining_after: float

    def summary(self) -> dict:
        """JSON-able numbers for reports."""
        return {"n_requests": len(self.targets),
                "target_steps": [t.trace.steps for t in self.targets],
                "target_final_loss": [t.trace.losses[-1] for t in self.targets],
                "target_prob": [t.target_prob for t in self.targets],
                "layers": [{"layer": s.layer, "remaining": s.remaining, "residual": s.residual}
                           for s in self.steps],
                "remaining_after": self.remaining_after}


# ------------------------------------------------------------------------------ targets
def subject_resid(adapter: ModelAdapter, requests: Sequence[EditRequest], layer: int) -> Float[Tensor, "n d_model"]:
    """The residual after block ``layer`` at the last subject token of each bare prompt."""
    positions = [locate(adapter, r.prompt, r.subject) for r in requests]
    tokens = adapter.to_batch([p.tokens for p in positions])
    with torch.no_grad():
        (resid,) = adapter.capture(tokens, [hook_name("resid_post", layer)], layer + 1)
    rows = torch.arange(len(positions), device=tokens.device)
    cols = torch.tensor([p.last_subject for p in positions], device=tokens.device)
    return resid[rows, cols].detach()


def optimize_target(
    adapter: ModelAdapter,
    request: EditRequest,
    hp: MemitHparams,
    templates: Sequence[str],
    callback: Callable[[StepEvent], None] | None = None,
    progress: bool = False,
) -> TargetResult:
    """MEMIT's z: δ on ``hook_resid_post`` of the last edit layer at the last subject token."""
    layer = hp.layers[-1]
    batch = rewrite_batch(adapter, request, templates, [hp.kl_prompt])
    h_init = subject_resid(adapter, [request], layer)[0]
    ref = float(h_init.norm())
    objective = RewriteObjective(adapter, batch, hook_name("resid_post", layer), layer, "subject",
                                 hp.kl_factor, hp.v_weight_decay, ref)
    delta = torch.zeros_like(h_init)
    settings = LoopSettings(hp.v_num_grad_steps, hp.v_lr, hp.clamp_norm_factor * ref, hp.early_stop_loss,
                            desc=f"MEMIT target L{layer}", progress=progress)
    with adapter.frozen():
        trace = optimize(objective, delta, settings, callback)
        prob = objective.target_prob(delta)
    return TargetResult(h_init, h_init + delta.detach(), trace, prob)


# -------------------------------------------------------------------------------- solve
def solve_update(
    keys: Float[Tensor, "n d_mlp"],
    residuals: Float[Tensor, "n d_model"],
    covariance: Float[Tensor, "d_mlp d_mlp"] | None,
    weight: float,
) -> Float[Tensor, "d_mlp d_model"]:
    """ΔW = (λC + KᵀK)⁻¹ KᵀR (C = I when ``covariance`` is None), in float64.

    With keys as rows the layer's output is K W, and
        f(Δ) = ‖K Δ − R‖² + λ tr(Δᵀ C Δ)
    has gradient 2Kᵀ(KΔ − R) + 2λCΔ, zero exactly at (KᵀK + λC) Δ = KᵀR: MEMIT's update (the
    reference code's R Kᵀ(λC + K Kᵀ)⁻¹ with keys as columns, transposed).
    """
    k, r = keys.double(), residuals.double()
    if covariance is None:
        c = torch.eye(k.shape[1], dtype=torch.float64, device=k.device)
    else:
        c = covariance.double().to(k.device)
    return torch.linalg.solve(weight * c + k.T @ k, k.T @ r).to(keys.dtype)


def layer_keys(
    adapter: ModelAdapter, requests: Sequence[EditRequest], layer: int, templates: Sequence[str]
) -> Float[Tensor, "n d_mlp"]:
    """K: each request's key at ``layer`` (last subject token, mean over the context templates)."""
    return torch.stack([mean_key(adapter, layer, templates, r.prompt, r.subject) for r in requests])


def update_layer(
    adapter: ModelAdapter, requests: Sequence[EditRequest], hp: MemitHparams, index: int,
    templates: Sequence[str], z: Float[Tensor, "n d_model"], covariance: Tensor | None,
) -> tuple[Float[Tensor, "d_mlp d_model"], LayerStep]:
    """ΔW at ``hp.layers[index]`` under the updates already applied to the model; ``covariance``
    is that layer's C (None for the identity)."""
    layer = hp.layers[index]
    keys = layer_keys(adapter, requests, layer, templates)
    remaining = z - subject_resid(adapter, requests, hp.layers[-1])
    residuals = remaining / (len(hp.layers) - index)
    delta = solve_update(keys, residuals, covariance, hp.mom2_update_weight).to(adapter.dtype)
    step = LayerStep(layer, float(remaining.norm(dim=-1).mean()), float(residuals.norm(dim=-1).mean()))
    return delta, step


# ------------------------------------------------------------------------------- editor
def compute_memit(
    model,
    requests: EditRequest | Sequence[EditRequest],
    hparams: MemitHparams = MemitHparams(),
    *,
    templates: Sequence[str] | None = None,
    covariance: Tensor | None = None,
    callback: Callable[[StepEvent], None] | None = None,
    progress: bool = False,
) -> WeightEdit:
    """Compute one MEMIT edit for all ``requests``; the model is left unchanged.

    Each layer is solved with the earlier layers' updates applied (and removed again before
    returning). ``covariance`` (one C for every layer) overrides the corpus statistic. Returns a
    ``WeightEdit`` with one ΔW_out per layer and ``MemitDetails``.
    """
    items = (requests,) if isinstance(requests, EditRequest) else tuple(requests)
    if not items:
        raise ValueError("compute_memit needs at least one EditRequest")
    adapter = as_adapter(model)
    adapter.require_mlp()
    for layer in hparams.layers:
        adapter.check_layer(layer, "MemitHparams.layers")
    templates = tuple(templates or context_templates(adapter, hparams.context_lengths))
    # Every layer's C is taken from the unedited model (as in the reference code): under the
    # earlier layers' updates the model's fingerprint, hence the statistic's cache key, changes.
    covariances = [second_moment_or_identity(adapter, layer, hparams.mom2_adjustment, covariance)
                   for layer in hparams.layers]
    targets = tuple(optimize_target(adapter, r, hparams, templates, callback, progress) for r in items)
    z = torch.stack([t.z for t in targets])
    deltas, steps = [], []
    with EditHandle(adapter) as handle:
        for index, layer in enumerate(hparams.layers):
            delta, step = update_layer(adapter, items, hparams, index, templates, z, covariances[index])
            deltas.append(LayerDelta(layer, delta))
            steps.append(step)
            handle.add(WeightEdit("memit", items, (deltas[-1],)))
        after = float((z - subject_resid(adapter, items, hparams.layers[-1])).norm(dim=-1).mean())
    details = MemitDetails(targets, tuple(steps), after)
    return WeightEdit("memit", items, tuple(deltas), hparams.to_dict(), details)


def apply_memit(model, requests: EditRequest | Sequence[EditRequest], hparams: MemitHparams = MemitHparams(),
                **kwargs) -> EditHandle:
    """Compute MEMIT for all ``requests`` as one batch and apply it.

    Returns the handle; ``handle.revert()`` restores the original weights bit for bit.
    """
    handle = EditHandle(model)
    handle.add(compute_memit(handle.adapter, requests, hparams, **kwargs))
    return handle


compute = compute_memit
apply = apply_memit

"""MEMIT (Meng et al., 2023): many facts at once, spread over several layers' W_out.

1. For each request, optimize δ added to the residual after the LAST edit layer L
   (``hook_resid_post``) at the last subject token of every rewriting prompt (ROME's objective,
   role ``"subject"``): the target residual z = h_init + δ.
2. For each edit layer l in order, with the earlier layers' updates applied:
   K = keys at l (mean over context templates, last subject token), one row per request;
   R = (z − h_L) / (layers left, this one included), h_L the current residual at L;
   ΔW_l = (λC + KᵀK)⁻¹ KᵀR, in TransformerLens orientation [d_mlp, d_model].
   That ΔW_l is the minimizer of ‖K(W + Δ) − (KW + R)‖² + λ·tr(Δᵀ C Δ) (see :func:`solve_update`).

``compute`` returns one ``WeightEdit`` with a low-rank ΔW per layer and leaves the model unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.covariance import fold_covariance
from toplens.core.nullspace import NullSpace, nullspace_for
from toplens.core.edits import EditDetails, EditHandle, LayerDelta, WeightEdit
from toplens.core.hparams import Hparams, HparamsError
from toplens.core.keys import mean_key
from toplens.core.objective import check_rewrite_lengths, rewrite_batch
from toplens.core.positions import locate
from toplens.core.requests import EditRequest
from toplens.core.stages import Observer, Stage, StageResult
from toplens.core.templates import context_templates
from toplens.core.value import ValueSettings, rewrite_stage
from toplens.editors.base import Editor
from toplens.model import ModelAdapter, Site, hook_name


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

    def _check(self) -> None:
        self._layers("layers")
        if list(self.layers) != sorted(set(self.layers)):
            raise HparamsError(f"MemitHparams.layers must be strictly increasing; got {self.layers!r}")
        self._value_optimization("mom2_update_weight")

    @property
    def edit_layers(self) -> tuple[int, ...]:
        return self.layers

    @property
    def target(self) -> ValueSettings:
        """The settings of each request's target optimization at the last edit layer."""
        return self._loop_mode(ValueSettings(self.v_num_grad_steps, self.v_lr, self.clamp_norm_factor,
                                              self.early_stop_loss, self.v_weight_decay, self.kl_factor))

    def with_steps(self, steps: int) -> "MemitHparams":
        return self.replace(v_num_grad_steps=self._check_steps(steps))

    def relayered(self, scale: Callable[[int], int], n_layers: int) -> "MemitHparams":
        return self.replace(layers=tuple(sorted({scale(layer) for layer in self.layers})))


@dataclass(frozen=True)
class LayerStep:
    """One layer's solve: the mean ‖z − h_L‖ before it and the mean ‖R‖ it was asked to write."""

    layer: int
    remaining: float
    residual: float


@dataclass(frozen=True)
class MemitDetails(EditDetails):
    """Diagnostics of one MEMIT batch: a target stage per request (z = h_init + δ), a solve per layer."""

    targets: tuple[StageResult, ...]
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


def stages(hp: MemitHparams) -> tuple[Stage, ...]:
    """One stage per request: δ on the residual after the last edit layer at the last subject token."""
    return (Stage("target", Site("resid_post", hp.layers[-1]), "subject", "rewrite"),)


def optimize_target(
    adapter: ModelAdapter, request: EditRequest, hp: MemitHparams, templates: Sequence[str],
    observe: Observer | None = None, progress: bool = False,
) -> StageResult:
    """MEMIT's z = h_init + δ for one request (``StageResult.optimized``)."""
    batch = rewrite_batch(adapter, request, templates, [hp.kl_prompt])
    h_init = subject_resid(adapter, [request], hp.layers[-1])[0]
    (stage,) = stages(hp)
    return rewrite_stage(adapter, batch, stage, h_init, hp.target, desc=f"MEMIT target L{hp.layers[-1]}",
                         observe=observe, progress=progress)


# -------------------------------------------------------------------------------- solve
def solve_update(
    keys: Float[Tensor, "n d_mlp"],
    residuals: Float[Tensor, "n d_model"],
    covariance: Float[Tensor, "d_mlp d_mlp"] | None,
    weight: float,
    space: NullSpace | None = None,
) -> tuple[Float[Tensor, "d_mlp n"], Float[Tensor, "n d_model"]]:
    """ΔW = (λC + KᵀK)⁻¹ KᵀR as factors U = (λC + KᵀK)⁻¹Kᵀ and V = R (C = I when ``covariance``
    is None), solved in float64 and returned in the keys' dtype.

    With keys as rows the layer's output is K W, and
        f(Δ) = ‖K Δ − R‖² + λ tr(Δᵀ C Δ)
    has gradient 2Kᵀ(KΔ − R) + 2λCΔ, zero exactly at (KᵀK + λC) Δ = KᵀR: MEMIT's update (the
    reference code's R Kᵀ(λC + K Kᵀ)⁻¹ with keys as columns, transposed). Its rank is at most n.
    With ``space`` (``project="nullspace"``) f is minimized over Δ = P X (:meth:`NullSpace.solve`).
    """
    k = keys.double()
    c = torch.eye(k.shape[1], dtype=torch.float64, device=k.device) if covariance is None else \
        covariance.double().to(k.device)
    u = torch.linalg.solve(weight * c + k.T @ k, k.T) if space is None else space.solve(weight * c + k.T @ k, k.T)
    return u.to(keys.dtype), residuals.to(keys.dtype)


def layer_keys(
    adapter: ModelAdapter, requests: Sequence[EditRequest], layer: int, templates: Sequence[str]
) -> Float[Tensor, "n d_mlp"]:
    """K: each request's key at ``layer`` (last subject token, mean over the context templates)."""
    return torch.stack([mean_key(adapter, layer, templates, r.prompt, r.subject) for r in requests])


def update_layer(
    adapter: ModelAdapter, requests: Sequence[EditRequest], hp: MemitHparams, index: int,
    templates: Sequence[str], z: Float[Tensor, "n d_model"], covariance: Tensor | None, space: NullSpace | None = None,
) -> tuple[LayerDelta, LayerStep]:
    """ΔW at ``hp.layers[index]`` (as factors) under the updates already applied to the model; ``covariance``
    is that layer's C (None for the identity)."""
    layer = hp.layers[index]
    keys = layer_keys(adapter, requests, layer, templates)
    remaining = z - subject_resid(adapter, requests, hp.layers[-1])
    residuals = remaining / (len(hp.layers) - index)
    u, v = solve_update(keys, residuals, covariance, hp.mom2_update_weight, space)
    step = LayerStep(layer, float(remaining.norm(dim=-1).mean()), float(residuals.norm(dim=-1).mean()))
    dtype = torch.promote_types(adapter.dtype, torch.float32)  # factors keep at least float32 precision
    return LayerDelta(layer, u.to(dtype), v.to(dtype)), step


# ------------------------------------------------------------------------------- editor
def compute_batch(
    adapter: ModelAdapter,
    requests: Sequence[EditRequest],
    hp: MemitHparams,
    *,
    observe: Observer | None = None,
    templates: Sequence[str] | None = None,
    covariance: Float[Tensor, "d_mlp d_mlp"] | None = None,
    progress: bool = False,
) -> WeightEdit:
    """One MEMIT edit for all ``requests``: a ΔW_out of rank ≤ len(requests) per layer.

    Each layer is solved with the earlier layers' updates applied (and removed again before
    returning). ``covariance`` (one C for every layer) overrides the corpus statistic.
    """
    items = tuple(requests)
    templates = tuple(templates or context_templates(adapter, hp.context_lengths))
    for request in items:  # every request's prompts must fit the context before any work
        check_rewrite_lengths(adapter, request, templates, [hp.kl_prompt])
    # every layer's C and null space from the unedited model (as in the reference code; edits change their cache key)
    covariances = [fold_covariance(adapter, layer, hp.mom2_adjustment, covariance) for layer in hp.layers]
    spaces = [nullspace_for(adapter, layer, hp) for layer in hp.layers]
    targets = tuple(optimize_target(adapter, r, hp, templates, observe, progress) for r in items)
    z = torch.stack([t.optimized for t in targets])
    deltas, steps = [], []
    with EditHandle(adapter) as handle:
        for index, layer in enumerate(hp.layers):
            delta, step = update_layer(adapter, items, hp, index, templates, z, covariances[index], spaces[index])
            deltas.append(delta)
            steps.append(step)
            handle.add(WeightEdit("memit", items, (delta,)))
        after = float((z - subject_resid(adapter, items, hp.layers[-1])).norm(dim=-1).mean())
    return WeightEdit("memit", items, tuple(deltas), hp.to_dict(), MemitDetails(targets, tuple(steps), after))


EDITOR = Editor("memit", MemitHparams, compute_batch, stages, batched=True)
compute = EDITOR.compute
apply = EDITOR.apply

"""ROME (Meng et al., 2022): a rank-one edit of W_out at one layer, keyed on the last subject token.

1. Optimize δ added to the MLP output (``hook_mlp_out``) of layer l at the last subject token of
   every rewriting prompt: the value v* = v_init + δ that makes the model say the new target.
2. Fold v* into W_out with the rank-one update of :func:`plugin.fold.rank_one_delta`, using
   u = C⁻¹k* (C the keys' second moment, or I) and, by default, one key k* throughout
   (``key="consistent"``, as "Rebuilding ROME" recommends); ``key="original"`` reproduces the
   reference code, which uses the bare prompt's key in the denominator and for v_cur.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.covariance import key_second_moment
from toplens.core.fold import EditHandle, LayerDelta, WeightEdit, apply_sequentially
from toplens.core.interventions import rank_one_update
from toplens.core.hparams import Hparams
from toplens.core.keys import KEY_MODES, KeyMode, key_value_at, mean_key
from toplens.model import ModelAdapter, as_adapter, hook_name
from toplens.core.objective import RewriteObjective, rewrite_batch
from toplens.core.optimize import LoopSettings, OptimizationTrace, StepEvent, optimize
from toplens.core.requests import EditRequest
from toplens.core.templates import context_templates


@dataclass(frozen=True)
class RomeHparams(Hparams):
    """ROME's hyperparameters; the defaults are the published GPT2-XL values."""

    layer: int = 17
    v_num_grad_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    early_stop_loss: float = 5e-2
    kl_prompt: str = "{} is a"
    mom2_adjustment: bool = True
    key: KeyMode = "consistent"
    context_lengths: tuple[tuple[int, int], ...] = ((10, 5), (10, 10))

    def __post_init__(self) -> None:
        self._layers("layer")
        self._value_optimization()
        self._choice("key", KEY_MODES)


@dataclass(frozen=True)
class ValueResult:
    """The optimized value at the edit site: v* = v_init + δ, with its loss curve."""

    layer: int
    v_init: Float[Tensor, " d_model"]
    v_star: Float[Tensor, " d_model"]
    trace: OptimizationTrace
    target_prob: float


@dataclass(frozen=True)
class RomeDetails:
    """Diagnostics of one ROME edit."""

    value: ValueResult
    key: Float[Tensor, " d_mlp"]
    key_mode: str

    def summary(self) -> dict:
        """JSON-able numbers for reports: steps, final loss, ‖δ‖, target probability."""
        trace = self.value.trace
        return {"steps": trace.steps, "converged": trace.converged, "final_loss": trace.losses[-1],
                "delta_norm": trace.delta_norm, "key_mode": self.key_mode,
                "rewrite_target_prob": self.value.target_prob}


def optimize_value(
    adapter: ModelAdapter,
    request: EditRequest,
    hp: RomeHparams,
    templates: Sequence[str],
    callback: Callable[[StepEvent], None] | None = None,
    progress: bool = False,
) -> ValueResult:
    """ROME's value optimization: δ on ``hook_mlp_out`` of ``hp.layer`` at the last subject token."""
    batch = rewrite_batch(adapter, request, templates, [hp.kl_prompt])
    _, values = key_value_at(adapter, hp.layer, [(request.prompt, request.subject)])
    v_init = values[0]
    objective = RewriteObjective(adapter, batch, hook_name("value", hp.layer), hp.layer, "subject",
                                 hp.kl_factor, hp.v_weight_decay, float(v_init.norm()))
    delta = torch.zeros_like(v_init)
    settings = LoopSettings(hp.v_num_grad_steps, hp.v_lr, hp.clamp_norm_factor * float(v_init.norm()),
                            hp.early_stop_loss, desc=f"ROME value L{hp.layer}", progress=progress)
    with adapter.frozen():
        trace = optimize(objective, delta, settings, callback)
        prob = objective.target_prob(delta)
    return ValueResult(hp.layer, v_init, v_init + delta.detach(), trace, prob)


def second_moment_or_identity(adapter: ModelAdapter, layer: int, mom2: bool, covariance) -> Tensor | None:
    """C for the fold: a given matrix, the (cached) corpus statistic, or None for the identity."""
    if covariance is not None:
        return covariance
    return key_second_moment(adapter, layer) if mom2 else None


def solve_u(key: Float[Tensor, " d_mlp"], covariance: Tensor | None) -> Float[Tensor, " d_mlp"]:
    """u = C⁻¹k (or k when C is the identity)."""
    if covariance is None:
        return key
    return torch.linalg.solve(covariance.double(), key.double()).to(key.dtype)


def compute_rome(
    model,
    request: EditRequest,
    hparams: RomeHparams = RomeHparams(),
    *,
    templates: Sequence[str] | None = None,
    covariance: Tensor | None = None,
    callback: Callable[[StepEvent], None] | None = None,
    progress: bool = False,
) -> WeightEdit:
    """Compute the ROME edit of ``request``; the model is left unchanged.

    Returns a ``WeightEdit`` with one ΔW_out at ``hparams.layer`` and ``details`` (a
    ``RomeDetails``: v_init, v*, the loss curve, k*).
    """
    adapter = as_adapter(model)
    adapter.require_mlp()
    adapter.check_layer(hparams.layer, "RomeHparams.layer")
    templates = tuple(templates or context_templates(adapter, hparams.context_lengths))
    value = optimize_value(adapter, request, hparams, templates, callback, progress)
    delta = fold_value(adapter, request, hparams, templates, value.v_star, covariance)
    details = RomeDetails(value, mean_key(adapter, hparams.layer, templates, request.prompt, request.subject),
                          hparams.key)
    return WeightEdit("rome", (request,), (LayerDelta(hparams.layer, delta),), hparams.to_dict(), details)


@dataclass(frozen=True)
class FoldMap:
    """What the fold at one layer will do, before v* is known: ΔW_out = û ⊗ (v* − v_cur), with
    û = u / (k · u). ``hooks`` applies that update to a forward pass (every position whose key has
    a component along û changes), so an objective can see the folded edit exactly."""

    layer: int
    direction: Float[Tensor, " d_mlp"]
    v_current: Float[Tensor, " d_model"]

    def delta_w(self, v_star: Float[Tensor, " d_model"]) -> Float[Tensor, "d_mlp d_model"]:
        return torch.outer(self.direction.double(), (v_star - self.v_current).double()).to(self.direction.dtype)

    def hooks(self, v_star: Callable[[], Tensor]) -> list:
        return rank_one_update(hook_name("key", self.layer), hook_name("value", self.layer), self.direction,
                               lambda: v_star() - self.v_current)


def fold_map(
    adapter: ModelAdapter,
    request: EditRequest,
    hp: RomeHparams,
    templates: Sequence[str],
    covariance: Tensor | None = None,
) -> FoldMap:
    """u = C⁻¹k* and the key and value it is normalized against (k*, W k* when ``key`` is
    "consistent"; the bare prompt's key and value when "original")."""
    layer = hp.layer
    k_star = mean_key(adapter, layer, templates, request.prompt, request.subject)
    u = solve_u(k_star, second_moment_or_identity(adapter, layer, hp.mom2_adjustment, covariance))
    if hp.key == "original":
        keys, values = key_value_at(adapter, layer, [(request.prompt, request.subject)])
        key, v_current = keys[0], values[0]
    else:
        key, v_current = k_star, adapter.mlp_output(layer, k_star)
    denominator = torch.dot(key.double(), u.double())
    if not torch.isfinite(denominator) or denominator.abs() < 1e-12:
        raise FloatingPointError(f"rank-one update is degenerate: key · u = {float(denominator):.3g}")
    return FoldMap(layer, (u.double() / denominator).to(u.dtype).detach(), v_current.detach())


def fold_value(
    adapter: ModelAdapter,
    request: EditRequest,
    hp: RomeHparams,
    templates: Sequence[str],
    v_star: Tensor,
    covariance: Tensor | None = None,
) -> Float[Tensor, "d_mlp d_model"]:
    """ΔW_out at ``hp.layer`` that maps the subject's key to ``v_star`` (ROME's fold)."""
    return fold_map(adapter, request, hp, templates, covariance).delta_w(v_star)


def apply_rome(model, requests: EditRequest | Sequence[EditRequest], hparams: RomeHparams = RomeHparams(),
               **kwargs) -> EditHandle:
    """Compute and apply ROME for one request or several in sequence (each sees the earlier ones).

    Returns the handle; ``handle.revert()`` restores the original weights bit for bit.
    """
    return apply_sequentially(compute_rome, model, requests, hparams, **kwargs)


compute = compute_rome
apply = apply_rome

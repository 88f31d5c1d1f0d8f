"""The rank-one fold that ROME, TOP and RETS share: the ΔW_out that maps a key k to a value v*.

With u = C⁻¹k* (C the keys' second moment, or I) and û = u / (k · u),

    ΔW_out = û ⊗ (v* − v_cur),    so that    k · (W + ΔW) = v_cur + (v* − v_cur) = v*.

``key_mode="consistent"`` (the default, as "Rebuilding ROME" recommends) takes k = k*, the key
averaged over the context templates, and v_cur = k* W; ``"original"`` takes the bare prompt's key
and value, as the ROME reference code does. RETS passes its subject-constrained C.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.edits import LayerDelta
from toplens.core.interventions import rank_one_update
from toplens.core.keys import KeyMode, Role, key_value_at, mean_key
from toplens.core.nullspace import NullSpace, check_direction
from toplens.core.requests import EditRequest
from toplens.core.sink import sink_key, sink_moment
from toplens.model import Hook, ModelAdapter, hook_name


@dataclass(frozen=True)
class RankOneFold:
    """What the fold at one layer will do, before v* is known: ΔW_out = û ⊗ (v* − v_cur), plus one
    such term for each key in ``also`` ((direction, v_current) pairs: keys that must map to v* as
    well, ``key="sink"``). ``hooks`` makes the same update in a forward pass (every position whose
    key has a component along û changes), so an objective can see the folded edit exactly."""

    layer: int
    direction: Float[Tensor, " d_mlp"]
    v_current: Float[Tensor, " d_model"]
    also: tuple[tuple[Tensor, Tensor], ...] = ()

    def _terms(self) -> tuple[tuple[Tensor, Tensor], ...]:
        return ((self.direction, self.v_current), *self.also)

    def delta(self, v_star: Float[Tensor, " d_model"]) -> LayerDelta:
        """The factors: û and v* − v_cur (one column and row per key)."""
        if not self.also:
            return LayerDelta.rank_one(self.layer, self.direction, v_star - self.v_current)
        terms = self._terms()
        return LayerDelta(self.layer, torch.stack([d for d, _ in terms], 1), torch.stack([v_star - c for _, c in terms]))

    def hooks(self, v_star: Callable[[], Tensor]) -> list[Hook]:
        key, value = hook_name("key", self.layer), hook_name("value", self.layer)
        return [h for direction, current in self._terms()
                for h in rank_one_update(key, value, direction, lambda c=current: v_star() - c)]


def solve_u(key: Float[Tensor, " d_mlp"], covariance: Tensor | None) -> Float[Tensor, " d_mlp"]:
    """u = C⁻¹k (or k when C is the identity, ``covariance=None``)."""
    if covariance is None:
        return key
    return torch.linalg.solve(covariance.double(), key.double()).to(key.dtype)


def rank_one_fold(
    layer: int, key: Float[Tensor, " d_mlp"], u: Float[Tensor, " d_mlp"], v_current: Float[Tensor, " d_model"]
) -> RankOneFold:
    """The fold normalized against ``key``: û = u / (key · u); a degenerate key · u is an error."""
    denominator = torch.dot(key.double(), u.double())
    if not torch.isfinite(denominator) or denominator.abs() < 1e-12:
        raise FloatingPointError(f"rank-one update is degenerate: key · u = {float(denominator):.3g}")
    dtype = torch.promote_types(u.dtype, torch.float32)  # factors keep at least float32 precision
    return RankOneFold(layer, (u.double() / denominator).to(dtype).detach(), v_current.detach().to(dtype))


def fold_at(
    adapter: ModelAdapter,
    request: EditRequest,
    layer: int,
    templates: Sequence[str],
    *,
    role: Role = "subject",
    key_mode: KeyMode = "consistent",
    covariance: Tensor | None = None,
    space: NullSpace | None = None,
) -> RankOneFold:
    """The fold of ``request`` at ``layer``: k* at ``role``'s token averaged over ``templates``,
    u = C⁻¹k* (solved inside ``space``, the preserved keys' null space, when given), normalized
    against k* and W k* ("consistent") or the bare prompt's key and value ("original"). "sink" is
    "consistent", except for a one-token subject at the first position (:mod:`toplens.core.sink`):
    there k* and the bare prompt's key both map to v*, solved against the first-position key
    moment in place of ``covariance``."""
    k_star = mean_key(adapter, layer, templates, request.prompt, request.subject, role=role)
    first = sink_key(adapter, layer, request, role) if key_mode == "sink" else None
    if first is not None:
        return two_key_fold(adapter, layer, torch.stack([k_star, first]), sink_moment(adapter, layer), space)
    u = solve_u(k_star, covariance) if space is None else _restricted_u(k_star, covariance, space)
    if key_mode == "original":
        keys, values = key_value_at(adapter, layer, [(request.prompt, request.subject)], role=role)
        if space is not None:
            check_direction(u, keys[0], space)
        return rank_one_fold(layer, keys[0], u, values[0])
    if space is not None:
        check_direction(u, k_star, space)
    return rank_one_fold(layer, k_star, u, adapter.mlp_output(layer, k_star))


def _restricted_u(key: Tensor, covariance: Tensor | None, space: NullSpace) -> Tensor:
    """u = C⁻¹k over the null space: Û (Ûᵀ C Û)⁻¹ Ûᵀ k, the direction of least uᵀCu among those
    with k · u = 1 inside it (P k for C = I)."""
    c = torch.eye(len(key), dtype=torch.float64, device=key.device) if covariance is None else covariance
    return space.solve(c, key[:, None])[:, 0].to(key.dtype)


def two_key_fold(adapter: ModelAdapter, layer: int, keys: Float[Tensor, "2 d_mlp"], c: Tensor,
                 space: NullSpace | None = None) -> RankOneFold:
    """The fold that maps each of ``keys`` to v*: U = C⁻¹K (KᵀC⁻¹K)⁻¹, so that k_i · U picks term
    i alone (solved inside ``space`` when given); a pair of keys C cannot tell apart is an error."""
    k = keys.double().T
    ci_k = torch.linalg.solve(c.double(), k) if space is None else space.solve(c, k)
    gram = k.T @ ci_k
    cond = float(torch.linalg.cond(gram)) if bool(torch.isfinite(gram).all()) else math.inf
    if cond > 1e8:
        raise FloatingPointError(f"the two-key fold at layer {layer} is degenerate: its keys' Gram matrix has "
                                 f"condition number {cond:.3g}")
    u = (ci_k @ torch.linalg.inv(gram)).T.to(torch.float32)
    if space is not None:
        for direction, key in zip(u, keys, strict=True):
            check_direction(direction, key, space)
    values = adapter.mlp_output(layer, keys)
    return RankOneFold(layer, u[0].detach(), values[0].detach().float(), ((u[1].detach(), values[1].detach().float()),))

"""The null-space projection of an edit (``project="nullspace"``, after AlphaEdit, ICLR 2025).

An update ΔW_out = û ⊗ r changes the MLP output of every key k by (k · û) r. Keys the edit should
leave alone, K₀ (the keys of ordinary text at that layer), span mostly the large-eigenvalue
directions of their second moment C = E[k kᵀ]. Let Û be the eigenvectors of C whose eigenvalue is
at most ``threshold`` times the largest, and P = Û Ûᵀ. Taking the fold's direction inside P's
range makes k · û ≈ 0 for the preserved keys: ‖K₀ᵀ û‖² = Σ over Û of (eigenvalue · n)(Ûᵀû)²,
at most threshold · λ_max · n ‖û‖². The edited key k* is still mapped exactly: û is normalized
so that k* · û = 1.

In a sequential run (:class:`SequentialProjection`, AlphaEdit's K_p term) each layer's Û is taken
once from the unedited model, and every edit's keys are added to the preserved set of the edits
after it: a later edit's direction is orthogonal to them too, so it leaves the earlier edits'
outputs where they were. The keys belong to one run and are never carried to another.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.covariance import SampledCorpus, key_second_moment
from toplens.core.hparams import Hparams, HparamsError
from toplens.core.keys import Role, mean_key
from toplens.core.requests import EditRequest
from toplens.core.sink import sink_key
from toplens.core.templates import context_templates, relation_prefixed
from toplens.model import ModelAdapter



@dataclass(frozen=True)
class NullSpace:
    """The preserved keys' null space at one layer: an orthonormal basis Û (d_mlp × r)."""

    layer: int
    basis: Float[Tensor, "d_mlp rank"]
    threshold: float

    @property
    def kept_fraction(self) -> float:
        """The share of key directions an edit may still use, r / d_mlp."""
        return self.basis.shape[1] / self.basis.shape[0]

    def project(self, x: Float[Tensor, "d_mlp *n"]) -> Float[Tensor, "d_mlp *n"]:
        """P x = Û Ûᵀ x."""
        b = self.basis.to(x.device, torch.float64)
        return (b @ (b.T @ x.double())).to(x.dtype)

    def solve(self, a: Float[Tensor, "d_mlp d_mlp"], rhs: Float[Tensor, "d_mlp n"]) -> Float[Tensor, "d_mlp n"]:
        """A⁻¹ rhs restricted to this space: X = Û (Ûᵀ A Û)⁻¹ Ûᵀ rhs, the minimizer of the
        quadratic ½ xᵀAx − xᵀrhs over x = Û y (A symmetric; a ridge of 1e-9 of its largest
        diagonal entry where Ûᵀ A Û is singular), in float64."""
        b = self.basis.to(a.device, torch.float64)
        m = b.T @ a.double() @ b
        ridge = 1e-9 * float(m.diagonal().abs().max()) + 1e-12 if len(m) else 0.0
        eye = torch.eye(len(m), dtype=m.dtype, device=m.device)
        return b @ torch.linalg.solve(m + ridge * eye, b.T @ rhs.double().to(a.device))

    def without(self, keys: Float[Tensor, "m d_mlp"]) -> "NullSpace":
        """The part of this space orthogonal to ``keys`` too: Û Q, with Q an orthonormal basis of
        the complement of Ûᵀ keysᵀ in Û's coordinates, so that k · x = 0 for every given k and x in it."""
        if not len(keys):
            return self
        b = self.basis.double()
        seen = b.T @ keys.to(b.device).double().T
        q, r = torch.linalg.qr(seen, mode="complete")
        rank = int((r.diagonal().abs() > 1e-10 * max(float(r.abs().max()), 1e-30)).sum()) if r.numel() else 0
        return replace(self, basis=(b @ q[:, rank:]).float())


def null_space(moment: Float[Tensor, "d_mlp d_mlp"], layer: int, threshold: float = 1e-2) -> NullSpace:
    """Û: the eigenvectors of the keys' second moment ``moment`` whose eigenvalue is at most
    ``threshold`` × the largest (decomposed once per distinct moment and threshold)."""
    if not 0 < threshold < 1:
        raise ValueError(f"nullspace_threshold must be in (0, 1); got {threshold!r}")
    moment = moment.detach().float().cpu().contiguous()
    key = (hashlib.sha1(moment.numpy().tobytes()).hexdigest(), threshold)
    if key not in _BASES:
        values, vectors = torch.linalg.eigh(moment.double())
        if len(_BASES) >= 8:
            _BASES.pop(next(iter(_BASES)))
        _BASES[key] = vectors[:, values <= threshold * values.max()].float()
    return NullSpace(layer, _BASES[key], threshold)


_BASES: dict[tuple[str, float], Tensor] = {}  # (the moment's hash, threshold) -> Û, oldest first


def nullspace_for(adapter: ModelAdapter, layer: int, hp: Hparams) -> NullSpace | None:
    """The null space an edit at ``layer`` is projected onto under ``hp`` (None: ``project="none"``),
    from the keys' second moment over the default corpus (the statistic C of the fold, cached).
    Call it on the unedited model; a threshold that keeps no direction is refused. Inside
    :meth:`SequentialProjection.active` it is that run's space, less the earlier edits' keys."""
    if hp.project == "none":
        return None
    run = _ACTIVE.get()
    if run is not None:
        space = run.space(adapter, layer, hp.nullspace_threshold)
    else:
        space = null_space(key_second_moment(adapter, layer).float(), layer, hp.nullspace_threshold)
    _check_kept(space, hp)
    return space


def _check_kept(space: NullSpace, hp: Hparams) -> None:
    layer = space.layer
    if space.basis.shape[1] == 0:
        raise HparamsError(f"{type(hp).__name__}.nullspace_threshold={hp.nullspace_threshold!r} keeps no key "
                           f"direction at layer {layer} (no eigenvalue of the keys' second moment is that small); "
                           "raise it")


class KeyInPreservedSpan(HparamsError):
    """The edited key lies almost wholly in the preserved keys' span: this request cannot be
    edited under this projection (a property of the request's key, not of the settings alone)."""


def check_direction(u: Tensor, key: Tensor, space: NullSpace) -> None:
    """Refuse a projected fold direction nearly orthogonal to the key it must map (|cos| < 1e-3):
    normalizing it against the key would magnify it a thousandfold or more."""
    cos = abs(float(torch.dot(u.double(), key.double()))) / max(float(u.double().norm() * key.double().norm()), 1e-30)
    if cos < 1e-3:
        raise KeyInPreservedSpan(f"nullspace_threshold={space.threshold!r}: the edited key at layer {space.layer} lies almost "
                           f"wholly in the preserved keys' span (cosine {cos:.1e} with the free directions); raise "
                           "nullspace_threshold or edit another layer")


@dataclass
class SequentialProjection:
    """The null-space projection of one sequential run: each layer's Û from the model as it was
    when the layer was first asked for (the unedited model, when :meth:`active` encloses the whole
    run), and K_p, the keys of the run's edits so far. Make one per run: its keys never leave it.
    K₀'s statistic is taken over ``corpus`` (any texts) when given, else over model-sampled text
    drawn as ``sampled`` says (its size sets the statistic's token count)."""

    spaces: dict[tuple[int, float], NullSpace] = field(default_factory=dict)
    keys: dict[int, list[Tensor]] = field(default_factory=dict)
    corpus: tuple[str, ...] | None = None
    sampled: SampledCorpus = SampledCorpus()

    def space(self, adapter: ModelAdapter, layer: int, threshold: float) -> NullSpace:
        """Û at ``layer`` less the span of the earlier edits' keys there."""
        if (layer, threshold) not in self.spaces:
            moment = key_second_moment(adapter, layer, self.corpus, sampled=self.sampled)
            self.spaces[layer, threshold] = null_space(moment.float(), layer, threshold)
        earlier = self.keys.get(layer, [])
        base = self.spaces[layer, threshold]
        return base.without(torch.stack(earlier)) if earlier else base

    def remember(self, adapter: ModelAdapter, requests: Sequence[EditRequest], hp, role: Role = "subject") -> None:
        """Add the keys each request's fold maps, at each of ``hp``'s edit layers, on the model as
        it is now (call it before applying that edit): k* at ``role``'s token, averaged over the
        rows the fold averages (the context templates, and TOP's relation-prefix row when
        ``hp.relation_prefix``), and the bare prompt's key where ``hp.key`` is "sink" and the
        subject is one token at the first position (:mod:`toplens.core.sink`)."""
        templates = context_templates(adapter, hp.context_lengths)
        for layer in hp.edit_layers:
            for request in requests:
                rows = relation_prefixed(templates, request.prompt, getattr(hp, "relation_prefix", False))
                keys = [mean_key(adapter, layer, rows, request.prompt, request.subject, role=role)]
                first = sink_key(adapter, layer, request, role) if getattr(hp, "key", None) == "sink" else None
                keys += [] if first is None else [first]
                self.keys.setdefault(layer, []).extend(k.detach().float().cpu() for k in keys)

    @contextmanager
    def active(self) -> Iterator["SequentialProjection"]:
        """Every ``project="nullspace"`` edit computed inside uses this run's spaces and keys."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


_ACTIVE: ContextVar[SequentialProjection | None] = ContextVar("toplens_sequential_projection", default=None)

"""The null-space projection of an edit (``project="nullspace"``, after AlphaEdit, ICLR 2025).

An update ΔW_out = û ⊗ r changes the MLP output of every key k by (k · û) r. Keys the edit should
leave alone, K₀ (the keys of ordinary text at that layer), span mostly the large-eigenvalue
directions of their second moment C = E[k kᵀ]. Let Û be the eigenvectors of C whose eigenvalue is
at most ``threshold`` times the largest, and P = Û Ûᵀ. Taking the fold's direction inside P's
range makes k · û ≈ 0 for the preserved keys: ‖K₀ᵀ û‖² = Σ over Û of (eigenvalue · n)(Ûᵀû)²,
at most threshold · λ_max · n ‖û‖². The edited key k* is still mapped exactly: û is normalized
so that k* · û = 1. :func:`projected_direction` can also project out the keys of earlier edits
of a sequential run (no editor passes them yet).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.covariance import key_second_moment
from toplens.core.hparams import Hparams, HparamsError
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


def projected_direction(u: Float[Tensor, " d_mlp"], space: NullSpace,
                        earlier_keys: Float[Tensor, "m d_mlp"] | None = None) -> Float[Tensor, " d_mlp"]:
    """P u, less its components along P k for each of ``earlier_keys`` (the keys of edits made
    before in the same sequential run), so that k · û = 0 exactly for those keys."""
    x = space.project(u)
    if earlier_keys is not None and len(earlier_keys):
        q, _ = torch.linalg.qr(space.project(earlier_keys.T.to(u.device)).double())
        x = (x.double() - q @ (q.T @ x.double())).to(u.dtype)
    return x


def nullspace_for(adapter: ModelAdapter, layer: int, hp: Hparams) -> NullSpace | None:
    """The null space an edit at ``layer`` is projected onto under ``hp`` (None: ``project="none"``),
    from the keys' second moment over the default corpus (the statistic C of the fold, cached).
    Call it on the unedited model; a threshold that keeps no direction is refused."""
    if hp.project == "none":
        return None
    space = null_space(key_second_moment(adapter, layer).float(), layer, hp.nullspace_threshold)
    if space.basis.shape[1] == 0:
        raise HparamsError(f"{type(hp).__name__}.nullspace_threshold={hp.nullspace_threshold!r} keeps no key "
                           f"direction at layer {layer} (no eigenvalue of the keys' second moment is that small); "
                           "raise it")
    return space


def check_direction(u: Tensor, key: Tensor, space: NullSpace) -> None:
    """Refuse a projected fold direction nearly orthogonal to the key it must map (|cos| < 1e-3):
    normalizing it against the key would magnify it a thousandfold or more."""
    cos = abs(float(torch.dot(u.double(), key.double()))) / max(float(u.double().norm() * key.double().norm()), 1e-30)
    if cos < 1e-3:
        raise HparamsError(f"nullspace_threshold={space.threshold!r}: the edited key at layer {space.layer} lies almost "
                           f"wholly in the preserved keys' span (cosine {cos:.1e} with the free directions); raise "
                           "nullspace_threshold or edit another layer")

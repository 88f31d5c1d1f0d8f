"""Objectives on the relation feature h_r, the residual after block la at its token (the last
prompt token unless ``relation_position`` chose another; TOP's stage 2): reach a target h*_r from
an edit site at layer l < la, in L2 or through the prediction the model reads from h_r. Only
blocks l..la run."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from toplens.core.fold import RankOneFold
from toplens.core.interventions import add_vector, patch_from, set_vectors
from toplens.core.objective import RewriteBatch
from toplens.core.optimize import LossTerms
from toplens.model import Hook, ModelAdapter, hook_name

#: the positions the readout resets at la (:meth:`RelationReadoutObjective._reset_mask`)
RESETS = ("others", "others_but_subject", "none", "both")


def relation_resid(adapter: ModelAdapter, batch: RewriteBatch, la: int) -> Float[Tensor, "s d_model"]:
    """The residual after block ``la`` at every site of the relation feature in the rewriting prompts
    (``batch.sites("relation", batch.n_rewrite)``: one per prompt, the last token by default)."""
    return relation_resid_and_prefix(adapter, batch, la)[0]


def relation_resid_and_prefix(
    adapter: ModelAdapter, batch: RewriteBatch, la: int
) -> tuple[Float[Tensor, "s d_model"], Float[Tensor, "batch pos d_model"]]:
    """:func:`relation_resid`, and from the same forward pass the residual entering block ``la`` in
    every row (``la`` ≥ 1): the prefix from which stage 1's steps run (``RewriteObjective(prefix=...)``).
    It is read after block la − 1, before block la's own hooks, as ``adapter.resid_before`` gives it."""
    prefix, resid = adapter.capture(batch.tokens, [hook_name("resid_post", la - 1), hook_name("resid_post", la)], la + 1)
    return resid[batch.sites("relation", batch.n_rewrite)].detach(), prefix.detach()



@dataclass
class RelationFeatureObjective:
    """vec_loss_factor · mean ‖h_r(δ) − h*_r‖ + decay, for δ added to the MLP output of ``layer``.

    h_r is the residual after block ``stop_layer - 1`` at each site (``site_rows``, ``site_cols``:
    one per row, or several with ``relation_position="all"``); only blocks ``layer .. stop_layer - 1``
    run (the residual entering ``layer`` is computed once).

    Args:
        adapter: the model.
        tokens: the prompts, one per row.
        last_subject: per row, δ's position; site_rows, site_cols: h_r's (``RewriteBatch.sites``).
        layer: the edit layer (δ goes on its ``hook_mlp_out``); stop_layer: la + 1.
        targets: h*_r per site.
        vec_loss_factor, weight_decay: loss weights; ref_norm: ‖v_init‖ for the decay term.
    """

    adapter: ModelAdapter
    tokens: Int[Tensor, "batch pos"]
    last_subject: Int[Tensor, " batch"]
    site_rows: Int[Tensor, " s"]
    site_cols: Int[Tensor, " s"]
    layer: int
    stop_layer: int
    targets: Float[Tensor, "s d_model"]
    vec_loss_factor: float
    weight_decay: float
    ref_norm: float
    fold: RankOneFold | None = None
    v_init: Tensor | None = None

    def __post_init__(self) -> None:
        self._prefix = self.adapter.resid_before(self.tokens, self.layer)
        self._rows = torch.arange(self.tokens.shape[0], device=self.tokens.device)

    def site_hooks(self, delta: Float[Tensor, " d_model"]) -> list[Hook]:
        """δ at the edit site: added to the MLP output at the last subject token (the published
        stage 2), or, with ``fold``, as the rank-one update that folding v_init + δ will make."""
        if self.fold is None:
            return [add_vector(hook_name("value", self.layer), delta, self._rows, self.last_subject)]
        return self.fold.hooks(lambda: self.v_init + delta)

    def resid(self, delta: Tensor | None) -> Float[Tensor, "s d_model"]:
        """h_r at every site with δ at the edit site."""
        hooks = [] if delta is None else self.site_hooks(delta)
        with self.adapter.hooks(hooks):
            resid = self.adapter.final_resid(self.tokens, self.layer, self._prefix, self.stop_layer)
        return resid[self.site_rows, self.site_cols]

    @property
    def h_star(self) -> Float[Tensor, " d_model"]:
        """h*_r at the first row's last site (the bare prompt's h_r)."""
        return self.targets[int((self.site_rows == 0).sum()) - 1]

    def __call__(self, delta: Float[Tensor, " d_model"]) -> LossTerms:
        distance = (self.resid(delta) - self.targets).norm(dim=-1).mean()
        decay = self.weight_decay * delta.norm() / self.ref_norm**2
        total = self.vec_loss_factor * distance + decay
        return LossTerms(total, decay=float(decay.detach()), distance=float(distance.detach()))

    @torch.no_grad()
    def reached(self, delta: Tensor) -> float:
        """How much of the move h*_r − h_r,init stage 2 made: 1 − ‖h_r(δ) − h*‖ / ‖h_r,init − h*‖."""
        start = (self.resid(None) - self.targets).norm(dim=-1)
        end = (self.resid(delta) - self.targets).norm(dim=-1)
        return float((1 - end / start.clamp_min(1e-12)).mean())


@dataclass
class RelationReadoutObjective(RelationFeatureObjective):
    """KL(P[· | h*_r] ‖ P[· | h_r(δ)]) + decay: stage 2 matched through what the model reads from h_r.

    δ is added to the MLP output of ``layer`` at the last subject token; at block ``la`` every
    position but h_r's sites is reset to its unedited residual, so δ reaches the
    prediction only through h_r (the decomposition P[o* | h_r] · P[h_r | v]). The target is the
    next-token distribution at the target positions with h*_r in place (stage 1's prediction).
    ``reset="both"`` averages the KL with the reset and the KL of the model as it is, so that the
    relation-specific path and the model the fold makes both carry o*.
    """

    target_rows: Int[Tensor, " m"] = None
    target_cols: Int[Tensor, " m"] = None
    reset: str = "others"

    def __post_init__(self) -> None:
        if self.reset not in RESETS:
            raise ValueError(f"reset must be one of {list(RESETS)}; got {self.reset!r}")
        super().__post_init__()
        la_hook = hook_name("resid_post", self.stop_layer - 1)
        with torch.no_grad():
            (clean,) = self.adapter.capture(self.tokens, [la_hook], self.stop_layer)
            self._keep_clean = patch_from(la_hook, clean, self._reset_mask(clean.shape[:2]))
            put = set_vectors(la_hook, self.targets, self.site_rows, self.site_cols)
            with self.adapter.hooks([put]):
                self._want = self.adapter.logits_at(self.tokens, self.target_rows, self.target_cols).log_softmax(-1)

    def _reset_mask(self, shape) -> Tensor:
        """The positions reset to their clean residual at la: all but h_r's sites
        ("others", and the reset half of "both"), also sparing the last subject token
        ("others_but_subject"), or none ("none")."""
        mask = torch.ones(shape, dtype=torch.bool, device=self.tokens.device)
        mask[self.site_rows, self.site_cols] = False
        if self.reset == "others_but_subject":
            mask[self._rows, self.last_subject] = False
        return mask if self.reset != "none" else torch.zeros_like(mask)

    def _kl(self, delta: Tensor, reset: bool) -> Tensor:
        hooks = [*self.site_hooks(delta), *([self._keep_clean] if reset else [])]
        with self.adapter.hooks(hooks):
            logits = self.adapter.logits_at(self.tokens, self.target_rows, self.target_cols, self.layer,
                                            self._prefix)
        return F.kl_div(logits.float().log_softmax(-1), self._want.float(), log_target=True, reduction="batchmean")

    def __call__(self, delta: Float[Tensor, " d_model"]) -> LossTerms:
        if self.reset == "both":
            kl = 0.5 * (self._kl(delta, True) + self._kl(delta, False))
        else:
            kl = self._kl(delta, self.reset != "none")
        decay = self.weight_decay * delta.norm() / self.ref_norm**2
        return LossTerms(kl + decay, kl=float(kl.detach()), decay=float(decay.detach()))


def relation_objective(
    adapter: ModelAdapter, batch: RewriteBatch, rows: slice, layer: int, la: int,
    targets: Float[Tensor, "n d_model"], v_init: Float[Tensor, " d_model"], *, loss: str = "l2",
    fold: RankOneFold | None = None, vec_loss_factor: float = 0.1, weight_decay: float = 0.5,
    reset: str = "others",
) -> RelationFeatureObjective:
    """The objective that moves h_r at la toward ``targets`` on ``rows`` of ``batch``, for δ at the
    MLP output of ``layer``: in L2 (``loss="l2"``) or through the prediction read from h_r
    (``"readout"``); δ acts at the last subject token, or through ``fold`` when given. ``rows`` starts
    at row 0, and ``targets`` holds h*_r for each of their sites (``batch.sites``)."""
    if rows.start not in (None, 0):
        raise ValueError(f"rows must start at the first row; got {rows!r}")
    at = batch.sites("relation", rows.stop)  # where h_r is read
    site = {"fold": fold, "v_init": v_init}
    v_norm = float(v_init.norm())
    if loss == "readout":
        keep = batch.target_rows < rows.stop
        return RelationReadoutObjective(adapter, batch.tokens[rows], batch.last_subject[rows], *at, layer,
                                        la + 1, targets, vec_loss_factor, weight_decay, v_norm, **site,
                                        target_rows=batch.target_rows[keep], target_cols=batch.target_cols[keep],
                                        reset=reset)
    tokens = batch.tokens[rows, : int(at[1].max()) + 1]
    return RelationFeatureObjective(adapter, tokens, batch.last_subject[rows], *at, layer, la + 1,
                                    targets, vec_loss_factor, weight_decay, v_norm, **site)

"""What TOP's two stages produce before the fold (``Stages``), and what a TOP edit reports: both stages
at each edit layer (loss curves, ‖δ₁‖, ‖δ₂‖, h*_r, v*, how close stage 2 came to h*_r, and where h_r was
read). Produced by :mod:`toplens.editors.top`, which re-exports them."""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from toplens.core.auto_la import LaChoice, ModelLa
from toplens.core.edits import EditDetails
from toplens.core.fold import RankOneFold
from toplens.core.optimize import OptimizationTrace
from toplens.core.relation import RelationFeatureObjective
from toplens.core.relation_ie import RelationIE


@dataclass(frozen=True)
class Stages:
    """Both stages at one edit layer before the fold: δ₁ at la, δ₂ at the edit site, the fold."""

    la: int
    v_init: Float[Tensor, " d_model"]
    delta1: Float[Tensor, " d_model"]
    trace1: OptimizationTrace
    prob1: float
    delta2: Float[Tensor, " d_model"]
    trace2: OptimizationTrace
    objective: RelationFeatureObjective
    fold: RankOneFold
    relation_ie: RelationIE | None = None  # the measurement behind relation_position="max_ie"


@dataclass(frozen=True)
class LayerDetails:
    """Both stages at one edit layer: loss curves, ‖δ₁‖, ‖δ₂‖, h*_r and how close stage 2 got."""

    layer: int
    la: int
    stage1: OptimizationTrace
    stage2: OptimizationTrace
    h_star: Float[Tensor, " d_model"]
    v_init: Float[Tensor, " d_model"]
    v_star: Float[Tensor, " d_model"]
    stage1_target_prob: float
    reached: float
    relation_ie: RelationIE | None = None  # where relation_position="max_ie" read h_r, and why

    @property
    def delta1_norm(self) -> float:
        return self.stage1.delta_norm

    @property
    def delta2_norm(self) -> float:
        return self.stage2.delta_norm


@dataclass(frozen=True)
class TopDetails(EditDetails):
    """Diagnostics of one TOP edit, one entry per edit layer."""

    layers: tuple[LayerDetails, ...]
    stage2_mode: str
    key_mode: str
    la_choice: LaChoice | ModelLa | None = None  # the measurement behind rel_feat_layer="auto", when it chose la

    def summary(self) -> dict:
        """JSON-able numbers for reports, per edit layer."""
        las = [d.la for d in self.layers]
        return {"stage2_mode": self.stage2_mode, "key_mode": self.key_mode,
                "la": las[0] if len(las) == 1 else las, "la_auto": self.la_choice is not None,
                "stage1_steps": sum(d.stage1.steps for d in self.layers),
                "stage2_steps": sum(d.stage2.steps for d in self.layers),
                "steps": sum(d.stage1.steps + d.stage2.steps for d in self.layers), "layers": [
            {"layer": d.layer, "la": d.la, "stage1_steps": d.stage1.steps, "stage2_steps": d.stage2.steps,
             "stage1_final_loss": d.stage1.losses[-1], "stage2_final_loss": d.stage2.losses[-1],
             "stage2_first_loss": d.stage2.losses[0], "stage1_converged": d.stage1.converged,
             "stage2_converged": d.stage2.converged, "delta1_norm": d.delta1_norm,
             "delta2_norm": d.delta2_norm, "stage1_target_prob": d.stage1_target_prob,
             "reached": d.reached,
             "relation_from_end": None if d.relation_ie is None else d.relation_ie.from_end} for d in self.layers]}

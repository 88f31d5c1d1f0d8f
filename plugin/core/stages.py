"""An editor's optimization stages described as data: where δ is added, at which token, with
which objective. Analyses (saliency, or one of your own) observe any editor through these
descriptions and an ``observe`` callback, without naming the editor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from jaxtyping import Float
from torch import Tensor

from toplens.core.keys import Role
from toplens.core.optimize import OptimizationTrace, StepEvent
from toplens.model import Site

ObjectiveKind = Literal["rewrite", "relation_l2", "relation_readout"]
""""rewrite": NLL of the new target + KL + decay (ROME's loss); "relation_l2" / "relation_readout":
reach a target relation feature h*_r in L2 or through the prediction read from it (TOP's stage 2)."""


@dataclass(frozen=True)
class Stage:
    """One optimization of an editor.

    Attributes:
        name: the stage's name within its editor ("value", "relation", "subject", "target").
        site: the activation δ is added to (a hook kind at a layer).
        role: the token δ is added at in every rewriting prompt.
        objective: what δ minimizes.
    """

    name: str
    site: Site
    role: Role
    objective: ObjectiveKind

    @property
    def hook(self) -> str:
        return self.site.name


Observer = Callable[[Stage, StepEvent], None]
"""Called after every backward pass of every stage (``event.delta.grad`` holds the gradient), and
once more with ``event.final`` set when the stage ends."""


@dataclass(frozen=True)
class StageResult:
    """The outcome of one stage: the activation it started from, δ, the loss curve, and the
    probability of the new target under δ where the objective has one."""

    stage: Stage
    init: Float[Tensor, " d"]
    delta: Float[Tensor, " d"]
    trace: OptimizationTrace
    target_prob: float | None

    @property
    def optimized(self) -> Float[Tensor, " d"]:
        """init + δ: v* for a value stage, h*_r for a relation stage, z for MEMIT's target."""
        return self.init + self.delta

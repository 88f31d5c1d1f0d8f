"""The setup around the one optimization loop that every editor and stage shares: a zero δ of the
starting activation's shape, Adam with a clamp of ‖δ‖ relative to that activation, the early
stop, frozen weights, and the observer of the stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.objective import RewriteBatch, RewriteObjective
from toplens.core.optimize import LossTerms, LoopSettings, OptimizationTrace, optimize
from toplens.core.precision import forward_precision
from toplens.core.stages import Observer, Stage, StageResult
from toplens.model import ModelAdapter


@dataclass(frozen=True)
class ValueSettings:
    """How one δ is optimized (ROME's and RETS's value, MEMIT's target, each of TOP's stages).

    Attributes:
        steps: forward evaluations at most; lr: Adam's learning rate.
        clamp_norm_factor: ‖δ‖ is kept below this times ‖the starting activation‖.
        stop_below: early stop once the loss is below this.
        weight_decay: the decay term's weight, weight_decay · ‖δ‖ / ‖start‖².
        kl_factor: the KL term's weight (objectives that have one).
        precision: "float32", "bfloat16" or "auto" for the forward passes of the loop (see Hparams).
        stop_rule: "total" (the whole loss) or "fit" (its NLL, or the loss without its decay
            term) is compared with ``stop_below``.
    """

    steps: int
    lr: float
    clamp_norm_factor: float
    stop_below: float
    weight_decay: float
    kl_factor: float = 0.0
    precision: str = "float32"
    stop_rule: str = "total"


class OneLayerValue:
    """What ROME's and RETS's hyperparameters share: one edit ``layer`` and one value optimization
    (fields v_num_grad_steps, v_lr, clamp_norm_factor, early_stop_loss, v_weight_decay, kl_factor).
    Mixed in before :class:`toplens.core.hparams.Hparams`."""

    layers_field: ClassVar[str] = "layer"

    @property
    def edit_layers(self) -> tuple[int, ...]:
        return (self.layer,)

    @property
    def value(self) -> ValueSettings:
        """The value optimization's settings."""
        return self._loop_mode(ValueSettings(self.v_num_grad_steps, self.v_lr, self.clamp_norm_factor,
                                              self.early_stop_loss, self.v_weight_decay, self.kl_factor))

    def with_steps(self, steps: int):
        return self.replace(v_num_grad_steps=self._check_steps(steps))

    def relayered(self, scale: Callable[[int], int], n_layers: int):
        return self.replace(layer=scale(self.layer))


def run_stage(
    adapter: ModelAdapter,
    stage: Stage,
    objective: Callable[[Tensor], LossTerms],
    init: Float[Tensor, " d"],
    settings: ValueSettings,
    *,
    desc: str,
    observe: Observer | None = None,
    progress: bool = False,
) -> tuple[Float[Tensor, " d"], OptimizationTrace]:
    """Minimize ``objective`` over δ (starting at zero) with every weight frozen; returns δ."""
    delta = torch.zeros_like(init)
    loop = LoopSettings(settings.steps, settings.lr, settings.clamp_norm_factor * float(init.norm()),
                        settings.stop_below, desc=desc, progress=progress, stop_rule=settings.stop_rule)
    callback = None if observe is None else (lambda event: observe(stage, event))
    with adapter.frozen(), forward_precision(adapter, settings.precision):
        trace = optimize(objective, delta, loop, callback)
    return delta.detach(), trace


def rewrite_stage(
    adapter: ModelAdapter,
    batch: RewriteBatch,
    stage: Stage,
    init: Float[Tensor, " d"],
    settings: ValueSettings,
    *,
    desc: str,
    observe: Observer | None = None,
    progress: bool = False,
    prefix: Tensor | None = None,
) -> StageResult:
    """A stage with ROME's rewriting objective: δ added at ``stage.site`` and ``stage.role`` in
    every row of ``batch``, the blocks below the site computed once (or given as ``prefix``)."""
    objective = RewriteObjective(adapter, batch, stage.hook, stage.site.layer, stage.role, settings.kl_factor,
                                 settings.weight_decay, float(init.norm()), prefix)
    delta, trace = run_stage(adapter, stage, objective, init, settings, desc=desc, observe=observe,
                             progress=progress)
    with adapter.frozen():
        prob = objective.target_prob(delta)
    return StageResult(stage, init, delta, trace, prob)

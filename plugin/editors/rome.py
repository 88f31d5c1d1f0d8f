"""ROME (Meng et al., 2022): a rank-one edit of W_out at one layer, keyed on the last subject token.

1. Optimize δ added to the MLP output (``hook_mlp_out``) of layer l at the last subject token of
   every rewriting prompt: the value v* = v_init + δ that makes the model say the new target.
2. Fold v* into W_out with the shared rank-one fold (:mod:`toplens.core.fold`), u = C⁻¹k* with C
   the keys' second moment (or I) and, by default, one key k* throughout (``key="consistent"``,
   as "Rebuilding ROME" recommends); ``key="original"`` reproduces the reference code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from jaxtyping import Float
from torch import Tensor

from toplens.core.covariance import fold_covariance
from toplens.core.edits import EditDetails, WeightEdit
from toplens.core.nullspace import nullspace_for
from toplens.core.fold import fold_at
from toplens.core.hparams import Hparams
from toplens.core.keys import KEY_MODES, KeyMode, key_value_at
from toplens.core.objective import rewrite_batch
from toplens.core.requests import EditRequest
from toplens.core.stages import Observer, Stage, StageResult
from toplens.core.templates import context_templates
from toplens.core.value import OneLayerValue, rewrite_stage
from toplens.editors.base import Editor
from toplens.model import ModelAdapter, Site


@dataclass(frozen=True)
class RomeHparams(OneLayerValue, Hparams):
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

    def _check(self) -> None:
        self._layers("layer")
        self._value_optimization()
        self._choice("key", KEY_MODES)


@dataclass(frozen=True)
class RomeDetails(EditDetails):
    """Diagnostics of one ROME edit: the value stage (v_init, v*, loss curve) and k*'s mode."""

    value: StageResult
    key_mode: str

    def summary(self) -> dict:
        """JSON-able numbers for reports: steps, final loss, ‖δ‖, target probability."""
        trace = self.value.trace
        return {"steps": trace.steps, "converged": trace.converged, "final_loss": trace.losses[-1],
                "delta_norm": trace.delta_norm, "key_mode": self.key_mode,
                "rewrite_target_prob": self.value.target_prob}


def stages(hp: RomeHparams) -> tuple[Stage, ...]:
    """One stage: δ on the MLP output of the edit layer at the last subject token."""
    return (Stage("value", Site("value", hp.layer), "subject", "rewrite"),)


def compute_one(
    adapter: ModelAdapter,
    request: EditRequest,
    hp: RomeHparams,
    *,
    observe: Observer | None = None,
    templates: Sequence[str] | None = None,
    covariance: Float[Tensor, "d_mlp d_mlp"] | None = None,
    progress: bool = False,
) -> WeightEdit:
    """The ROME edit of ``request``: one rank-one ΔW_out at ``hp.layer``, and ``RomeDetails``.
    ``covariance`` is a given C instead of the corpus statistic."""
    templates = tuple(templates or context_templates(adapter, hp.context_lengths))
    batch = rewrite_batch(adapter, request, templates, [hp.kl_prompt])
    _, values = key_value_at(adapter, hp.layer, [(request.prompt, request.subject)])
    (stage,) = stages(hp)
    c = fold_covariance(adapter, hp.layer, hp.mom2_adjustment, covariance)  # the fold first: its errors cost no steps
    fold = fold_at(adapter, request, hp.layer, templates, key_mode=hp.key, covariance=c,
                   space=nullspace_for(adapter, hp.layer, hp))
    value = rewrite_stage(adapter, batch, stage, values[0], hp.value, desc=f"ROME value L{hp.layer}",
                          observe=observe, progress=progress)
    return WeightEdit("rome", (request,), (fold.delta(value.optimized),), hp.to_dict(), RomeDetails(value, hp.key))


EDITOR = Editor("rome", RomeHparams, compute_one, stages)
compute = EDITOR.compute
apply = EDITOR.apply

"""RETS (Liu et al., 2024, "Relation Also Knows"): a relation-focused ROME with subject constraints.

The whole filled prompt plays the subject's role:

1. Optimize δ added to the MLP output (``hook_mlp_out``) of a late layer l at the LAST PROMPT
   TOKEN of every rewriting prompt (the rewriting objective at role ``"relation"``): v*.
2. Fold v* with the shared rank-one fold keyed on k*, the last-token key averaged over the
   context templates, and u = C⁻¹k* with
       C = E[k kᵀ] (or I)  +  constraint_weight · Σ_j k_j k_jᵀ,
   the k_j being last-token keys of OTHER facts' prompts with the same relation. The extra term
   makes u nearly orthogonal to those keys, so other subjects keep their answers.

The constraint prompts are filled prompts (``constraint_prompts``); by default the request's
prompt is filled with the subjects of :data:`CONSTRAINT_SUBJECTS` (analyses can pass real facts).
Published layers: GPT2-XL 35, GPT-J 17, Llama-2-7B 22.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.covariance import fold_covariance
from toplens.core.edits import EditDetails, WeightEdit
from toplens.core.nullspace import nullspace_for
from toplens.core.fold import fold_at
from toplens.core.hparams import Hparams
from toplens.core.keys import KEY_MODES, KeyMode, key_value_at
from toplens.core.objective import rewrite_batch
from toplens.core.positions import check_fits
from toplens.core.requests import EditRequest
from toplens.core.stages import Observer, Stage, StageResult
from toplens.core.templates import context_templates
from toplens.core.value import OneLayerValue, rewrite_stage
from toplens.editors.base import Editor
from toplens.model import ModelAdapter, Site, hook_name

#: Subjects that fill the request's prompt when no constraint prompts are given: varied kinds
#: (people, places, companies, things) so the constraint covers the relation, not one subject type.
CONSTRAINT_SUBJECTS: tuple[str, ...] = (
    "Barack Obama", "Albert Einstein", "Marie Curie", "William Shakespeare", "Pablo Picasso",
    "Lionel Messi", "Taylor Swift", "Paris", "Tokyo", "Brazil", "Canada", "Egypt", "Toyota",
    "Microsoft", "Nokia", "the BBC", "the Eiffel Tower", "the Amazon River", "Harvard University",
    "the Beatles",
)


@dataclass(frozen=True)
class RetsHparams(OneLayerValue, Hparams):
    """RETS's hyperparameters; the defaults are GPT2-XL's (layer 35, ROME's value settings).

    ``constraint_weight`` scales Σ k_j k_jᵀ (a sum over the constraint prompts, added to C as in
    the reference code); 0 turns the subject constraint off.
    """

    layer: int = 35
    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    early_stop_loss: float = 5e-2
    kl_prompt: str = "{} is a"
    mom2_adjustment: bool = True
    constraint_weight: float = 1.0
    key: KeyMode = "consistent"
    context_lengths: tuple[tuple[int, int], ...] = ((10, 5), (10, 10))

    def _check(self) -> None:
        self._layers("layer")
        self._value_optimization()
        self._positive("constraint_weight", allow_zero=True)
        self._choice("key", KEY_MODES)


@dataclass(frozen=True)
class RetsDetails(EditDetails):
    """Diagnostics of one RETS edit: the value stage and the constraint prompts that were used."""

    value: StageResult
    key_mode: str
    constraint_prompts: tuple[str, ...]

    def summary(self) -> dict:
        """JSON-able numbers for reports: steps, final loss, ‖δ‖, target probability, constraints."""
        trace = self.value.trace
        return {"steps": trace.steps, "converged": trace.converged, "final_loss": trace.losses[-1],
                "delta_norm": trace.delta_norm, "key_mode": self.key_mode,
                "rewrite_target_prob": self.value.target_prob, "n_constraints": len(self.constraint_prompts)}


def default_constraint_prompts(request: EditRequest, subjects: Sequence[str] = CONSTRAINT_SUBJECTS) -> tuple[str, ...]:
    """The request's prompt filled with other subjects (the request's own subject left out)."""
    own = request.subject.strip().lower()
    return tuple(request.prompt.replace("{}", s) for s in subjects if s.strip().lower() != own)


@torch.no_grad()
def last_token_keys(adapter: ModelAdapter, layer: int, texts: Sequence[str]) -> Float[Tensor, "n d_mlp"]:
    """The key (MLP hidden activation) at ``layer`` at the last token of each text."""
    seqs = [adapter.tokenize(t) for t in texts]
    tokens = adapter.to_batch(seqs)
    (keys,) = adapter.capture(tokens, [hook_name("key", layer)], layer + 1)
    rows = torch.arange(len(seqs), device=tokens.device)
    cols = torch.tensor([len(s) - 1 for s in seqs], device=tokens.device)
    return keys[rows, cols]


def constrained_second_moment(
    adapter: ModelAdapter, hp: RetsHparams, constraint_prompts: Sequence[str], covariance: Tensor | None = None
) -> Float[Tensor, "d_mlp d_mlp"] | None:
    """C = E[k kᵀ] (or I) + constraint_weight · Σ_j k_j k_jᵀ; None when C is the plain identity."""
    base = fold_covariance(adapter, hp.layer, hp.mom2_adjustment, covariance)
    if hp.constraint_weight == 0 or not constraint_prompts:
        return base
    keys = last_token_keys(adapter, hp.layer, constraint_prompts).double()
    if base is None:
        base = torch.eye(adapter.d_mlp, dtype=torch.float64, device=keys.device)
    return (base.double() + hp.constraint_weight * keys.T @ keys).to(adapter.dtype)


def stages(hp: RetsHparams) -> tuple[Stage, ...]:
    """One stage: δ on the MLP output of the edit layer at the last prompt token."""
    return (Stage("value", Site("value", hp.layer), "relation", "rewrite"),)


def compute_one(
    adapter: ModelAdapter,
    request: EditRequest,
    hp: RetsHparams,
    *,
    observe: Observer | None = None,
    constraint_prompts: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    covariance: Float[Tensor, "d_mlp d_mlp"] | None = None,
    progress: bool = False,
) -> WeightEdit:
    """The RETS edit of ``request``: one rank-one ΔW_out at ``hp.layer``, and ``RetsDetails``.

    ``constraint_prompts``: filled prompts of other facts with the same relation, whose last-token
    keys the update should leave alone (default: the prompt filled with
    :data:`CONSTRAINT_SUBJECTS`). ``covariance``: a given E[k kᵀ] (the constraint is added to it).
    """
    templates = tuple(templates or context_templates(adapter, hp.context_lengths))
    given = default_constraint_prompts(request) if constraint_prompts is None else constraint_prompts
    constraints = tuple(p for p in given if p != request.text)
    check_fits(adapter, constraints, "RETS's constraint prompt {}")
    batch = rewrite_batch(adapter, request, templates, [hp.kl_prompt])
    _, values = key_value_at(adapter, hp.layer, [(request.prompt, request.subject)], role="relation")
    (stage,) = stages(hp)
    c = constrained_second_moment(adapter, hp, constraints, covariance)  # the fold first: its errors cost no steps
    fold = fold_at(adapter, request, hp.layer, templates, role="relation", key_mode=hp.key, covariance=c,
                   space=nullspace_for(adapter, hp.layer, hp))
    value = rewrite_stage(adapter, batch, stage, values[0], hp.value, desc=f"RETS value L{hp.layer}",
                          observe=observe, progress=progress)
    details = RetsDetails(value, hp.key, constraints)
    return WeightEdit("rets", (request,), (fold.delta(value.optimized),), hp.to_dict(), details)


EDITOR = Editor("rets", RetsHparams, compute_one, stages, fold_role="relation")
compute = EDITOR.compute
apply = EDITOR.apply

"""RETS (Liu et al., 2024, "Relation Also Knows"): a relation-focused ROME with subject constraints.

The whole filled prompt plays the subject's role:

1. Optimize δ added to the MLP output (``hook_mlp_out``) of a late layer l at the LAST PROMPT
   TOKEN of every rewriting prompt (ROME's objective, role ``"relation"``): v* = v_init + δ.
2. Fold v* into W_out with ROME's rank-one update keyed on k*, the last-token key averaged over
   the context templates, and u = C⁻¹k* with
       C = E[k kᵀ] (or I)  +  constraint_weight · Σ_j k_j k_jᵀ,
   the k_j being last-token keys of OTHER facts' prompts with the same relation. The extra term
   makes u nearly orthogonal to those keys, so other subjects keep their answers.

The constraint prompts are filled prompts (``constraint_prompts``); by default the request's
prompt is filled with the subjects of :data:`CONSTRAINT_SUBJECTS` (analyses can pass real facts).
Published layers: GPT2-XL 35, GPT-J 17, Llama-2-7B 22.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.fold import EditHandle, LayerDelta, WeightEdit, apply_sequentially, rank_one_delta
from toplens.core.hparams import Hparams
from toplens.core.keys import KEY_MODES, KeyMode, key_value_at, mean_key
from toplens.model import ModelAdapter, as_adapter, hook_name
from toplens.core.objective import RewriteObjective, rewrite_batch
from toplens.core.optimize import LoopSettings, StepEvent, optimize
from toplens.core.requests import EditRequest
from toplens.core.templates import context_templates
from toplens.editors.rome import ValueResult, second_moment_or_identity, solve_u

#: Subjects that fill the request's prompt when no constraint prompts are given: varied kinds
#: (people, places, companies, things) so the constraint covers the relation, not one subject type.
CONSTRAINT_SUBJECTS: tuple[str, ...] = (
    "Barack Obama", "Albert Einstein", "Marie Curie", "William Shakespeare", "Pablo Picasso",
    "Lionel Messi", "Taylor Swift", "Paris", "Tokyo", "Brazil", "Canada", "Egypt", "Toyota",
    "Microsoft", "Nokia", "the BBC", "the Eiffel Tower", "the Amazon River", "Harvard University",
    "the Beatles",
)

#: Published edit layers (RETS paper), by model.
PUBLISHED_LAYERS: dict[str, int] = {"gpt2-xl": 35, "gpt-j-6b": 17, "llama-2-7b": 22}


@dataclass(frozen=True)
class RetsHparams(Hparams):
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

    def __post_init__(self) -> None:
        self._layers("layer")
        self._value_optimization()
        self._positive("constraint_weight", allow_zero=True)
        self._choice("key", KEY_MODES)


@dataclass(frozen=True)
class RetsDetails:
    """Diagnostics of one RETS edit: the value, k*, and how many constraint keys were used."""

    value: ValueResult
    key: Float[Tensor, " d_mlp"]
    key_mode: str
    constraint_prompts: tuple[str, ...]

    def summary(self) -> dict:
        """JSON-able numbers for reports: steps, final loss, ‖δ‖, target probability, constraints."""
        trace = self.value.trace
        return {"steps": trace.steps, "converged": trace.converged, "final_loss": trace.losses[-1],
                "delta_norm": trace.delta_norm, "key_mode": self.key_mode,
                "rewrite_target_prob": self.value.target_prob,
                "n_constraints": len(self.constraint_prompts)}


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
    base = second_moment_or_identity(adapter, hp.layer, hp.mom2_adjustment, covariance)
    if hp.constraint_weight == 0 or not constraint_prompts:
        return base
    keys = last_token_keys(adapter, hp.layer, constraint_prompts).double()
    if base is None:
        base = torch.eye(adapter.d_mlp, dtype=torch.float64, device=keys.device)
    return (base.double() + hp.constraint_weight * keys.T @ keys).to(adapter.dtype)


def optimize_value(
    adapter: ModelAdapter,
    request: EditRequest,
    hp: RetsHparams,
    templates: Sequence[str],
    callback: Callable[[StepEvent], None] | None = None,
    progress: bool = False,
) -> ValueResult:
    """RETS's value: δ on ``hook_mlp_out`` of ``hp.layer`` at the last prompt token."""
    batch = rewrite_batch(adapter, request, templates, [hp.kl_prompt])
    _, values = key_value_at(adapter, hp.layer, [(request.prompt, request.subject)], role="relation")
    v_init = values[0]
    objective = RewriteObjective(adapter, batch, hook_name("value", hp.layer), hp.layer, "relation",
                                 hp.kl_factor, hp.v_weight_decay, float(v_init.norm()))
    delta = torch.zeros_like(v_init)
    settings = LoopSettings(hp.v_num_grad_steps, hp.v_lr, hp.clamp_norm_factor * float(v_init.norm()),
                            hp.early_stop_loss, desc=f"RETS value L{hp.layer}", progress=progress)
    with adapter.frozen():
        trace = optimize(objective, delta, settings, callback)
        prob = objective.target_prob(delta)
    return ValueResult(hp.layer, v_init, v_init + delta.detach(), trace, prob)


def fold_value(
    adapter: ModelAdapter,
    request: EditRequest,
    hp: RetsHparams,
    templates: Sequence[str],
    v_star: Float[Tensor, " d_model"],
    constraint_prompts: Sequence[str],
    covariance: Tensor | None = None,
) -> Float[Tensor, "d_mlp d_model"]:
    """ΔW_out at ``hp.layer`` that maps the prompt's last-token key to ``v_star``, with u = C⁻¹k*
    under the subject-constrained C."""
    k_star = mean_key(adapter, hp.layer, templates, request.prompt, request.subject, role="relation")
    u = solve_u(k_star, constrained_second_moment(adapter, hp, constraint_prompts, covariance))
    if hp.key == "original":
        keys, values = key_value_at(adapter, hp.layer, [(request.prompt, request.subject)], role="relation")
        return rank_one_delta(u, keys[0], v_star, values[0])
    return rank_one_delta(u, k_star, v_star, adapter.mlp_output(hp.layer, k_star))


def compute_rets(
    model,
    request: EditRequest,
    hparams: RetsHparams = RetsHparams(),
    *,
    constraint_prompts: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    covariance: Tensor | None = None,
    callback: Callable[[StepEvent], None] | None = None,
    progress: bool = False,
) -> WeightEdit:
    """Compute the RETS edit of ``request``; the model is left unchanged.

    Args:
        constraint_prompts: filled prompts of other facts with the same relation, whose
            last-token keys the update should leave alone. Default: the request's prompt filled
            with :data:`CONSTRAINT_SUBJECTS`.
        covariance: a given E[k kᵀ] instead of the corpus statistic (the constraint is added).

    Returns a ``WeightEdit`` with one ΔW_out at ``hparams.layer`` and ``RetsDetails``.
    """
    adapter = as_adapter(model)
    adapter.require_mlp()
    adapter.check_layer(hparams.layer, "RetsHparams.layer")
    templates = tuple(templates or context_templates(adapter, hparams.context_lengths))
    constraints = tuple(default_constraint_prompts(request) if constraint_prompts is None else constraint_prompts)
    constraints = tuple(p for p in constraints if p != request.text)
    value = optimize_value(adapter, request, hparams, templates, callback, progress)
    delta = fold_value(adapter, request, hparams, templates, value.v_star, constraints, covariance)
    k_star = mean_key(adapter, hparams.layer, templates, request.prompt, request.subject, role="relation")
    details = RetsDetails(value, k_star, hparams.key, constraints)
    return WeightEdit("rets", (request,), (LayerDelta(hparams.layer, delta),), hparams.to_dict(), details)


def apply_rets(model, requests: EditRequest | Sequence[EditRequest], hparams: RetsHparams = RetsHparams(),
               **kwargs) -> EditHandle:
    """Compute and apply RETS for one request or several in sequence (each sees the earlier ones).

    Returns the handle; ``handle.revert()`` restores the original weights bit for bit.
    """
    return apply_sequentially(compute_rets, model, requests, hparams, **kwargs)


compute = compute_rets
apply = apply_rets

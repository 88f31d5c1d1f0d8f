"""Gradient saliency of an edit's value optimization (the paper's Fig. 1-style analysis).

While ROME (or TOP's stage 1 / stage 2) optimizes its δ, at every step the rewriting prompts are
run through the *whole* model with the current δ at the edit site, and the gradient of the
rewriting loss L (the mean NLL of the new target, as in the objective) is taken at the residual
stream after every block, ``blocks.{l}.hook_resid_post``. Per layer and token position we record

    ‖∂L/∂h_{l,i}‖        and        |h_{l,i} · ∂L/∂h_{l,i}|   (gradient × activation),

averaged over the optimization steps and over the rewriting prompts. The rewriting prompts are
context prefix + prompt; each is aligned onto the bare prompt's positions by token role (prefix
tokens are dropped), so the map has one column per token of the bare prompt. The paper's finding:
saliency concentrates at the last subject token and the last relation token.

The editors run the layers below the edit layer only once, so their own backward pass never
reaches those layers; this module runs its own full forward + backward per step (through the
editor's ``callback``) with backward hooks on every layer, attached through ``model.hooks`` so
they compose with any hooks the user has active.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from toplens.editors import rome, top
from toplens.editors.rome import RomeHparams
from toplens.editors.top import TopHparams
from toplens.core.interventions import Hook, add_vector, capture, capture_grad
from toplens.model import ModelAdapter, as_adapter, hook_name
from toplens.core.objective import RewriteBatch, rewrite_batch
from toplens.core.optimize import StepEvent
from toplens.core.positions import PromptPositions, locate
from toplens.editors.presets import preset_or_given
from toplens.core.requests import EditRequest
from toplens.core.templates import context_templates

from toplens.analyses.causal_trace import token_labels
from toplens.analyses.maps import LayerPositionMap

logger = logging.getLogger(__name__)

METHODS = ("rome", "top")
FOCUS_ROLES = ("last_subject", "last_relation")


# ------------------------------------------------------------------------ alignment
def _prompt_start(adapter: ModelAdapter, template: str) -> int:
    """Index of the prompt's first own token in ``template`` filled with it (after the prefix)."""
    prefix = template[: template.index("{}")]
    return len(adapter.tokenize(prefix.rstrip())) if prefix.strip() else len(adapter.tokenize(""))


def _align_row(bare: PromptPositions, bare_start: int, row: PromptPositions, row_start: int) -> list[int]:
    """For each bare-prompt position, the matching position in one rewriting prompt (−1: none).

    Tokens before the prompt (BOS) map to themselves; the words before the subject are anchored
    at the subject's first token, the subject at its last token, the relation at the last token.
    """
    out = []
    for i in range(len(bare.tokens)):
        if i < bare_start:
            j, low = i, 0
        elif i < bare.subject_start:
            j, low = row.subject_start - (bare.subject_start - i), row_start
        elif i <= bare.last_subject:
            j, low = row.last_subject - (bare.last_subject - i), row.subject_start
        else:
            j, low = row.last_relation - (bare.last_relation - i), row.last_subject + 1
        out.append(j if j >= low else -1)
    return out


def prompt_alignment(
    adapter: ModelAdapter, request: EditRequest, templates: Sequence[str]
) -> Int[Tensor, "row pos"]:
    """Row r, column i: the position in rewriting prompt r (``templates[r]``) that plays the role
    of the bare prompt's position i, or −1 where that prompt has no such token."""
    bare = locate(adapter, request.prompt, request.subject)
    bare_start = _prompt_start(adapter, "{}")
    rows = []
    for template in templates:
        row = locate(adapter, template.replace("{}", request.prompt), request.subject)
        rows.append(_align_row(bare, bare_start, row, _prompt_start(adapter, template)))
    return torch.tensor(rows, dtype=torch.long)


# --------------------------------------------------------------------- one step
@dataclass
class SaliencyProbe:
    """The rewriting prompts and the running sums of both saliencies, aligned to the bare prompt.

    Attributes:
        adapter: the model; batch: the rewriting batch (its KL rows are not used).
        alignment: see :func:`prompt_alignment`.
        grad_sum, gxa_sum: sums over recorded (step, prompt) pairs per [layer, position].
        counts: how many (step, prompt) pairs each position received; steps: recorded steps.
    """

    adapter: ModelAdapter
    batch: RewriteBatch
    alignment: Int[Tensor, "row pos"]
    grad_sum: Float[Tensor, "layer pos"] = field(init=False)
    gxa_sum: Float[Tensor, "layer pos"] = field(init=False)
    counts: Float[Tensor, " pos"] = field(init=False)
    steps: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        shape = (self.adapter.n_layers, self.alignment.shape[1])
        self.grad_sum, self.gxa_sum = torch.zeros(shape), torch.zeros(shape)
        self.counts = torch.zeros(shape[1])

    @property
    def names(self) -> list[str]:
        return [hook_name("resid_post", layer) for layer in range(self.adapter.n_layers)]

    def record(self, site_hooks: Sequence[Hook]) -> None:
        """One full forward + backward with ``site_hooks`` (the current δ); add both saliencies."""
        grads, acts = self.gradients(site_hooks)
        valid = self.alignment >= 0
        index = self.alignment.clamp_min(0)
        for layer, name in enumerate(self.names):
            grad, act = grads[name][0][: len(index)], acts[name][: len(index)]
            norm = grad.norm(dim=-1).float().cpu().gather(1, index)
            gxa = (grad * act).sum(-1).abs().float().cpu().gather(1, index)
            self.grad_sum[layer] += (norm * valid).sum(0)
            self.gxa_sum[layer] += (gxa * valid).sum(0)
        self.counts += valid.sum(0)
        self.steps += 1

    def gradients(self, site_hooks: Sequence[Hook]) -> tuple[dict[str, list[Tensor]], dict[str, Tensor]]:
        """∂L/∂h and h at every layer's ``hook_resid_post`` for the rewriting prompts."""
        grads: dict[str, list[Tensor]] = {}
        acts: dict[str, Tensor] = {}
        fwd = [(hook_name("embed"), _grad_leaf), *site_hooks, *(capture(n, acts) for n in self.names)]
        bwd = [capture_grad(n, grads) for n in self.names]
        with torch.enable_grad(), self.adapter.frozen(), self.adapter.hooks(fwd, bwd):
            rewriting_nll(self.adapter, self.batch).backward()
        return grads, acts

    def maps(self) -> tuple[Float[Tensor, "layer pos"], Float[Tensor, "layer pos"]]:
        """The averages: grad norm and grad × activation per [layer, position]."""
        if self.steps == 0:
            raise RuntimeError("no saliency step was recorded")
        denominator = self.counts.clamp_min(1)
        return self.grad_sum / denominator, self.gxa_sum / denominator


def _grad_leaf(act: Tensor, hook) -> Tensor:
    """Make the token embeddings a leaf that needs a gradient, so that the backward pass reaches
    every block even while the weights are frozen."""
    return act.detach().requires_grad_(True)


def rewriting_nll(adapter: ModelAdapter, batch: RewriteBatch) -> Float[Tensor, ""]:
    """The rewriting loss: mean NLL of the target tokens over the rewriting prompts.

    A plain full forward to the logits: the loss must flow through every hook point's output
    (where backward hooks sit), which a residual captured inside a hook would bypass.
    """
    tokens = batch.tokens[: batch.n_rewrite]
    logits = adapter.logits(tokens)[batch.target_rows, batch.target_cols]
    logp = logits.float().log_softmax(-1).gather(1, batch.target_ids[:, None]).squeeze(1)
    return -(logp * batch.target_weight).sum()


def _delta_hook(name: str, batch: RewriteBatch, role: str) -> Callable[[Tensor], Hook]:
    """A factory: the current δ (detached from the optimizer) added at ``name``, at ``role``'s
    position of every rewriting prompt."""
    rows = torch.arange(batch.n_rewrite, device=batch.tokens.device)
    cols = batch.positions(role)[: batch.n_rewrite]
    return lambda delta: add_vector(name, delta.detach().clone(), rows, cols)


def _recorder(probe: SaliencyProbe, make_hook: Callable[[Tensor], Hook]) -> Callable[[StepEvent], None]:
    return lambda event: probe.record([make_hook(event.delta)])


# ------------------------------------------------------------------ the optimizations
def _run_rome(adapter, request, hp: RomeHparams, templates, probe: SaliencyProbe, progress: bool) -> None:
    hook = _delta_hook(hook_name("value", hp.layer), probe.batch, "subject")
    value = rome.optimize_value(adapter, request, hp, templates, _recorder(probe, hook), progress)
    if probe.steps == 0:  # converged before any update: record the final δ once
        probe.record([hook(value.v_star - value.v_init)])


def _run_top(adapter, request, hp: TopHparams, templates, probe: SaliencyProbe, stages, progress) -> None:
    layer = hp.layers[0]
    batch = probe.batch
    stage1_hook = _delta_hook(hook_name("resid_post", layer + hp.rel_feat_layer), batch, "relation")
    stage2_hook = _delta_hook(hook_name("value", layer), batch, "subject")
    skip = lambda event: None  # noqa: E731
    callbacks = (_recorder(probe, stage1_hook) if 1 in stages else skip,
                 _recorder(probe, stage2_hook) if 2 in stages else skip)
    st = top.run_stages(adapter, request, hp, layer, templates, batch, callbacks=callbacks, progress=progress)
    if probe.steps == 0:
        probe.record([stage2_hook(st.delta2)] if 2 in stages else [stage1_hook(st.delta1)])


# ------------------------------------------------------------------------- result
@dataclass(frozen=True)
class SaliencyResult:
    """Gradient saliency of one edit's optimization.

    Attributes:
        grad_norm: mean ‖∂L/∂h‖ per [layer, bare-prompt position].
        grad_x_act: mean |h · ∂L/∂h| per [layer, position].
        method: "rome" or "top"; edit_layer: l; relation_layer: TOP's la (None for ROME).
        stages: TOP stages recorded (() for ROME); steps: optimization steps recorded;
        n_prompts: rewriting prompts averaged over.
    """

    grad_norm: LayerPositionMap
    grad_x_act: LayerPositionMap
    method: str
    edit_layer: int
    relation_layer: int | None
    stages: tuple[int, ...]
    steps: int
    n_prompts: int

    def maps(self) -> dict[str, LayerPositionMap]:
        return {"grad_norm": self.grad_norm, "grad_x_act": self.grad_x_act}

    def summary(self) -> dict[str, Any]:
        """Subject vs relation, per quantity: mean saliency of each role per layer and over all
        layers, the ratio last-token / other-tokens for subject and relation, and the fraction
        of layers ≥ the edit layer whose most salient position is the last subject or last
        relation token."""
        return {name: _map_summary(m, self.edit_layer) for name, m in self.maps().items()}

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: settings, both grids, tokens, roles, per-layer argmax, summary."""
        out: dict[str, Any] = {"method": self.method, "edit_layer": self.edit_layer,
                               "relation_layer": self.relation_layer, "stages": list(self.stages),
                               "steps": self.steps, "n_prompts": self.n_prompts,
                               "tokens": list(self.grad_norm.tokens), "roles": list(self.grad_norm.roles),
                               "summary": self.summary()}
        for name, m in self.maps().items():
            out[name] = {"values": m.values.tolist(), "argmax": _argmax_rows(m)}
        return out


def _argmax_rows(m: LayerPositionMap) -> list[dict[str, Any]]:
    """Per layer, the position of maximal saliency: index, token, role and value."""
    return [{"layer": layer, "index": i, "token": m.tokens[i], "role": m.roles[i], "value": float(m.values[layer, i])}
            for layer, i in enumerate(m.argmax_positions())]


def _map_summary(m: LayerPositionMap, edit_layer: int) -> dict[str, Any]:
    means = m.role_means()
    overall = {role: float(v.mean()) for role, v in means.items()}
    argmax_roles = [m.roles[i] for i in m.argmax_positions()]
    upper = argmax_roles[edit_layer:]
    fraction = lambda roles: sum(r in roles for r in upper) / max(len(upper), 1)  # noqa: E731
    ratio = lambda a, b: overall[a] / overall[b] if a in overall and overall.get(b) else None  # noqa: E731
    return {
        "per_layer": [{role: float(v[layer]) for role, v in means.items()} for layer in range(m.values.shape[0])],
        "overall": overall,
        "last_subject_over_subject": ratio("last_subject", "subject"),
        "last_relation_over_relation": ratio("last_relation", "relation"),
        "argmax_roles": argmax_roles,
        "layers_from_edit": len(upper),
        "fraction_argmax_last_subject_or_relation": fraction(FOCUS_ROLES),
        "fraction_argmax_last_subject": fraction(("last_subject",)),
        "fraction_argmax_last_relation": fraction(("last_relation",)),
    }


# --------------------------------------------------------------------------- entry
def resolve_hparams(adapter: ModelAdapter, method: str, hparams, steps: int | None):
    """The method's hyperparameters (its preset for this model unless given), with ``steps``
    replacing the optimization steps (both stages for TOP); TOP keeps its first edit layer."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}")
    hp = preset_or_given(method, hparams, adapter.name, adapter.n_layers)
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int; got {steps!r}")
        hp = hp.replace(v_num_grad_steps=steps) if method == "rome" else hp.replace(
            v_num_grad_steps1=steps, v_num_grad_steps2=steps)
    if method == "top" and len(hp.layers) > 1:
        logger.warning("saliency follows TOP at its first edit layer only (layers=%s)", hp.layers)
        hp = hp.replace(layers=hp.layers[:1])
    return hp


def gradient_saliency(
    model, request: EditRequest, method: str = "rome", hparams: RomeHparams | TopHparams | None = None, *,
    steps: int | None = None, stages: Sequence[int] = (1, 2), templates: Sequence[str] | None = None,
    progress: bool = False,
) -> SaliencyResult:
    """Gradient saliency of ``method``'s value optimization for ``request`` (the model is not changed).

    Args:
        model: a TransformerLens model or adapter; hooks the user has active stay active.
        request: the fact to rewrite.
        method: "rome" (δ on the MLP output at the last subject token) or "top" (stage 1: δ₁ on
            the residual at la, last relation token; stage 2: δ₂ on the MLP output of l).
        hparams: the method's hyperparameters (default: its preset for this model).
        steps: override the optimization steps (each TOP stage).
        stages: the TOP stages whose steps are recorded.
        templates: context templates (default: generated for the model as the editors do).
    """
    adapter = as_adapter(model)
    adapter.require_mlp()
    hp = resolve_hparams(adapter, method, hparams, steps)
    layer = hp.layer if method == "rome" else hp.layers[0]
    adapter.check_layer(layer, "edit layer")
    relation_layer = None if method == "rome" else adapter.check_layer(layer + hp.rel_feat_layer, "la")
    stages = tuple(sorted(set(stages))) if method == "top" else ()
    if method == "top" and (not stages or not set(stages) <= {1, 2}):
        raise ValueError(f"stages must be a non-empty subset of (1, 2); got {stages!r}")
    templates = tuple(templates or context_templates(adapter, hp.context_lengths))
    batch = rewrite_batch(adapter, request, templates, [hp.kl_prompt])
    probe = SaliencyProbe(adapter, batch, prompt_alignment(adapter, request, templates))
    if method == "rome":
        _run_rome(adapter, request, hp, templates, probe, progress)
    else:
        _run_top(adapter, request, hp, templates, probe, stages, progress)
    return _result(adapter, request, probe, method, layer, relation_layer, stages, len(templates))


def _result(adapter, request, probe: SaliencyProbe, method, layer, relation_layer, stages, n_prompts) -> SaliencyResult:
    grad, gxa = probe.maps()
    tokens, roles = token_labels(adapter, locate(adapter, request.prompt, request.subject))
    label = f"{method.upper()} at layer {layer}"
    return SaliencyResult(LayerPositionMap(grad, tokens, roles, "grad_norm", f"‖∂L/∂h‖, {label}"),
                          LayerPositionMap(gxa, tokens, roles, "grad_x_act", f"|h·∂L/∂h|, {label}"),
                          method, layer, relation_layer, stages, probe.steps, n_prompts)

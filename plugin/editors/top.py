"""TOP (arXiv 2506.04042): a ROME-style edit whose value is found in two stages.

The prediction P[o* | v] is split into P[o* | h_r] · P[h_r | v]:

1. Stage 1 (the relation feature): optimize δ₁ added to the residual after block
   la = l + rel_feat_layer at the last relation token (the last prompt token) of every
   rewriting prompt, with ROME's loss (NLL + KL + decay). h*_r = h_r,init + δ₁.
2. Stage 2 (the subject feature): optimize δ₂ added to the MLP output of block l at the last
   subject token, so that the residual at la, last relation token, reaches h*_r. Only blocks
   l..la run. v* = v_init + δ₂.
3. Fold v* into W_out at layer l with ROME's fold (:func:`plugin.editors.rome.fold_map`).

``stage2="faithful"`` (the default) is the published stage 2: vec_loss_factor · ‖h_r(δ₂) − h*_r‖
on the bare prompt only. ``stage2="all_prompts"`` averages the same distance over every rewriting
prompt (target h_r,init + δ₁ in each), aimed at generalization; it is not yet validated.

Two options of ours, both off by default (the published algorithm) and both on in the SmolLM2
preset (docs/top_stage2.md has the measurements):

- ``stage2_loss="readout"`` matches h*_r through what the model reads from it,
  KL(P[· | h*_r] ‖ P[· | h_r(δ₂)]), with every other position reset to its clean residual at la,
  instead of in L2. On a small model most of h*_r − h_r,init cannot be reached from the subject;
  the part that carries o* can.
- ``stage2_site="fold"`` optimizes δ₂ as the rank-one update the fold will make (every
  position's MLP output at layer l moves by (k · û)(v_init + δ₂ − v_cur)), rather than as a
  vector added at the last subject token. Stage 2 then sees exactly the model it will produce;
  with the subject-only site a stage-2 optimum can shrink or vanish once folded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from toplens.core.fold import EditHandle, LayerDelta, WeightEdit, apply_sequentially
from toplens.core.hparams import Hparams, HparamsError
from toplens.core.interventions import Hook, add_vector, patch_from, set_vectors
from toplens.core.keys import KEY_MODES, KeyMode, key_value_at
from toplens.model import ModelAdapter, as_adapter, hook_name
from toplens.core.objective import RewriteBatch, RewriteObjective, rewrite_batch
from toplens.core.optimize import LossTerms, LoopSettings, OptimizationTrace, StepEvent, optimize
from toplens.core.requests import EditRequest
from toplens.core.templates import context_templates
from toplens.editors.rome import FoldMap, RomeHparams, fold_map

Stage2 = Literal["faithful", "all_prompts"]
Stage2Loss = Literal["l2", "readout"]
Stage2Site = Literal["subject", "fold"]


@dataclass(frozen=True)
class TopHparams(Hparams):
    """TOP's hyperparameters; the defaults are the published GPT2-XL values."""

    layers: tuple[int, ...] = (17, 18)
    rel_feat_layer: int = 1
    v_num_grad_steps1: int = 25
    v_num_grad_steps2: int = 25
    v_lr: float = 0.5
    v_lr2: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    vec_loss_factor: float = 0.1
    early_stop1: float = 2e-2
    early_stop2: float = 5e-2
    kl_prompt: str = "{} is a"
    mom2_adjustment: bool = True
    key: KeyMode = "consistent"
    context_lengths: tuple[tuple[int, int], ...] = ((10, 5), (10, 10))
    stage2: Stage2 = "faithful"
    stage2_loss: Stage2Loss = "l2"
    stage2_site: Stage2Site = "subject"

    def __post_init__(self) -> None:
        self._layers("layers")
        if list(self.layers) != sorted(set(self.layers)):
            raise HparamsError(f"TopHparams.layers must be strictly increasing; got {self.layers!r}")
        self._positive("rel_feat_layer", "v_num_grad_steps1", "v_num_grad_steps2")
        self._positive("v_lr", "v_lr2", "clamp_norm_factor", "vec_loss_factor", "early_stop1", "early_stop2")
        self._positive("v_weight_decay", "kl_factor", allow_zero=True)
        if isinstance(self.rel_feat_layer, bool) or not isinstance(self.rel_feat_layer, int):
            raise HparamsError(f"TopHparams.rel_feat_layer must be an int; got {self.rel_feat_layer!r}")
        self._choice("key", KEY_MODES)
        self._choice("stage2", ("faithful", "all_prompts"))
        self._choice("stage2_loss", ("l2", "readout"))
        self._choice("stage2_site", ("subject", "fold"))
        self._template("kl_prompt")

    def for_layer(self, layer: int) -> RomeHparams:
        """The ROME settings of one edit layer, for the shared fold."""
        return RomeHparams(layer=layer, mom2_adjustment=self.mom2_adjustment, key=self.key,
                           context_lengths=self.context_lengths)


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

    @property
    def delta1_norm(self) -> float:
        return self.stage1.delta_norm

    @property
    def delta2_norm(self) -> float:
        return self.stage2.delta_norm


@dataclass(frozen=True)
class TopDetails:
    """Diagnostics of one TOP edit, one entry per edit layer."""

    layers: tuple[LayerDetails, ...]
    stage2_mode: str
    key_mode: str

    def summary(self) -> dict:
        """JSON-able numbers for reports, per edit layer."""
        las = [d.la for d in self.layers]
        return {"stage2_mode": self.stage2_mode, "key_mode": self.key_mode,
                "la": las[0] if len(las) == 1 else las,
                "stage1_steps": sum(d.stage1.steps for d in self.layers),
                "stage2_steps": sum(d.stage2.steps for d in self.layers),
                "steps": sum(d.stage1.steps + d.stage2.steps for d in self.layers), "layers": [
            {"layer": d.layer, "la": d.la, "stage1_steps": d.stage1.steps, "stage2_steps": d.stage2.steps,
             "stage1_final_loss": d.stage1.losses[-1], "stage2_final_loss": d.stage2.losses[-1],
             "stage2_first_loss": d.stage2.losses[0], "stage1_converged": d.stage1.converged,
             "stage2_converged": d.stage2.converged, "delta1_norm": d.delta1_norm,
             "delta2_norm": d.delta2_norm, "stage1_target_prob": d.stage1_target_prob,
             "reached": d.reached} for d in self.layers]}


# ---------------------------------------------------------------------------- stage 1
def relation_resid(adapter: ModelAdapter, batch: RewriteBatch, la: int) -> Float[Tensor, "n d_model"]:
    """The residual after block ``la`` at the last relation token of each rewriting prompt."""
    (resid,) = adapter.capture(batch.tokens, [hook_name("resid_post", la)], la + 1)
    rows = torch.arange(batch.n_rewrite, device=resid.device)
    return resid[rows, batch.last_relation[: batch.n_rewrite]].detach()


def optimize_relation(
    adapter: ModelAdapter, batch: RewriteBatch, hp: TopHparams, la: int,
    callback: Callable[[StepEvent], None] | None = None, progress: bool = False,
    h_init: Float[Tensor, "n d_model"] | None = None,
) -> tuple[Float[Tensor, " d_model"], OptimizationTrace, float]:
    """Stage 1: δ₁ on ``hook_resid_post`` of ``la`` at the last relation token; returns δ₁.
    ``h_init`` is :func:`relation_resid` of ``batch`` if the caller already has it."""
    if h_init is None:
        with torch.no_grad():
            h_init = relation_resid(adapter, batch, la)
    ref = float(h_init[0].norm())
    objective = RewriteObjective(adapter, batch, hook_name("resid_post", la), la, "relation",
                                 hp.kl_factor, hp.v_weight_decay, ref)
    delta = torch.zeros_like(h_init[0])
    settings = LoopSettings(hp.v_num_grad_steps1, hp.v_lr, hp.clamp_norm_factor * ref, hp.early_stop1,
                            desc=f"TOP stage 1 L{la}", progress=progress)
    trace = optimize(objective, delta, settings, callback)
    return delta.detach(), trace, objective.target_prob(delta)


# ---------------------------------------------------------------------------- stage 2
@dataclass
class RelationFeatureObjective:
    """vec_loss_factor · mean ‖h_r(δ) − h*_r‖ + decay, for δ added to the MLP output of ``layer``.

    h_r is the residual after block ``stop_layer - 1`` at the last relation token of each row;
    only blocks ``layer .. stop_layer - 1`` run (the residual entering ``layer`` is computed once).

    Args:
        adapter: the model.
        tokens: the prompts, one per row.
        last_subject, last_relation: positions per row.
        layer: the edit layer (δ goes on its ``hook_mlp_out``); stop_layer: la + 1.
        targets: h*_r per row.
        vec_loss_factor, weight_decay: loss weights; ref_norm: ‖v_init‖ for the decay term.
    """

    adapter: ModelAdapter
    tokens: Int[Tensor, "batch pos"]
    last_subject: Int[Tensor, " batch"]
    last_relation: Int[Tensor, " batch"]
    layer: int
    stop_layer: int
    targets: Float[Tensor, "batch d_model"]
    vec_loss_factor: float
    weight_decay: float
    ref_norm: float
    fold: FoldMap | None = None
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

    def resid(self, delta: Tensor | None) -> Float[Tensor, "batch d_model"]:
        """h_r of every row with δ at the edit site."""
        hooks = [] if delta is None else self.site_hooks(delta)
        with self.adapter.hooks(hooks):
            resid = self.adapter.final_resid(self.tokens, self.layer, self._prefix, self.stop_layer)
        return resid[self._rows, self.last_relation]

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
    position but the last relation token is reset to its unedited residual, so δ reaches the
    prediction only through h_r (the decomposition P[o* | h_r] · P[h_r | v]). The target is the
    next-token distribution at the target positions with h*_r in place (stage 1's prediction).
    """

    target_rows: Int[Tensor, " m"] = None
    target_cols: Int[Tensor, " m"] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        la_hook = hook_name("resid_post", self.stop_layer - 1)
        with torch.no_grad():
            (clean,) = self.adapter.capture(self.tokens, [la_hook], self.stop_layer)
            others = torch.ones(clean.shape[:2], dtype=torch.bool, device=clean.device)
            others[self._rows, self.last_relation] = False
            self._keep_clean = patch_from(la_hook, clean, others)
            put = set_vectors(la_hook, self.targets, self._rows, self.last_relation)
            with self.adapter.hooks([put]):
                self._want = self.adapter.logits_at(self.tokens, self.target_rows, self.target_cols).log_softmax(-1)

    def __call__(self, delta: Float[Tensor, " d_model"]) -> LossTerms:
        with self.adapter.hooks([*self.site_hooks(delta), self._keep_clean]):
            logits = self.adapter.logits_at(self.tokens, self.target_rows, self.target_cols, self.layer,
                                            self._prefix)
        kl = F.kl_div(logits.float().log_softmax(-1), self._want.float(), log_target=True, reduction="batchmean")
        decay = self.weight_decay * delta.norm() / self.ref_norm**2
        return LossTerms(kl + decay, kl=float(kl.detach()), decay=float(decay.detach()))


def stage2_rows(batch: RewriteBatch, mode: Stage2) -> slice:
    """The faithful stage 2 matches h*_r on the bare prompt (row 0); "all_prompts" on every one."""
    return slice(0, 1) if mode == "faithful" else slice(0, batch.n_rewrite)


def stage2_objective(
    adapter: ModelAdapter, batch: RewriteBatch, hp: TopHparams, layer: int, la: int,
    delta1: Tensor, v_init: Tensor, fold: FoldMap | None = None, h_init: Tensor | None = None,
) -> RelationFeatureObjective:
    """Stage 2's objective: h*_r = h_r,init + δ₁ in each row it uses (row 0 alone when faithful),
    reached in L2 (the published loss) or through the prediction read from h_r ("readout"); δ₂
    acts at the last subject token, or through ``fold`` (``stage2_site="fold"``). ``h_init`` is
    :func:`relation_resid` of ``batch`` if the caller already has it."""
    rows = stage2_rows(batch, hp.stage2)
    last_rel = batch.last_relation[rows]
    if h_init is None:
        with torch.no_grad():
            h_init = relation_resid(adapter, batch, la)
    targets = h_init[rows] + delta1
    site = {"fold": fold if hp.stage2_site == "fold" else None, "v_init": v_init}
    v_norm = float(v_init.norm())
    if hp.stage2_loss == "readout":
        keep = batch.target_rows < rows.stop
        return RelationReadoutObjective(adapter, batch.tokens[rows], batch.last_subject[rows], last_rel, layer,
                                        la + 1, targets, hp.vec_loss_factor, hp.v_weight_decay, v_norm,
                                        **site, target_rows=batch.target_rows[keep],
                                        target_cols=batch.target_cols[keep])
    tokens = batch.tokens[rows, : int(last_rel.max()) + 1]
    return RelationFeatureObjective(adapter, tokens, batch.last_subject[rows], last_rel, layer, la + 1,
                                    targets, hp.vec_loss_factor, hp.v_weight_decay, v_norm, **site)


def optimize_subject(
    objective: RelationFeatureObjective, hp: TopHparams, v_init: Tensor,
    callback: Callable[[StepEvent], None] | None = None, progress: bool = False,
) -> tuple[Float[Tensor, " d_model"], OptimizationTrace]:
    """Stage 2: δ₂ on ``hook_mlp_out`` of the edit layer at the last subject token; returns δ₂."""
    max_norm = hp.clamp_norm_factor * float(v_init.norm())
    delta = torch.zeros_like(v_init)
    settings = LoopSettings(hp.v_num_grad_steps2, hp.v_lr2, max_norm, hp.early_stop2,
                            desc=f"TOP stage 2 L{objective.layer}", progress=progress)
    trace = optimize(objective, delta, settings, callback)
    return delta.detach(), trace


# ---------------------------------------------------------------------------- one layer
@dataclass(frozen=True)
class Stages:
    """Both optimizations at one edit layer, before the fold: δ₁ at la (stage 1), δ₂ at the edit
    site (stage 2, through ``objective``), and the fold map when stage 2 optimized through it."""

    la: int
    v_init: Float[Tensor, " d_model"]
    delta1: Float[Tensor, " d_model"]
    trace1: OptimizationTrace
    prob1: float
    delta2: Float[Tensor, " d_model"]
    trace2: OptimizationTrace
    objective: RelationFeatureObjective
    fold: FoldMap | None


def run_stages(
    adapter: ModelAdapter, request: EditRequest, hp: TopHparams, layer: int, templates: Sequence[str],
    batch: RewriteBatch | None = None, covariance: Tensor | None = None,
    callbacks: tuple[Callable[[StepEvent], None] | None, Callable[[StepEvent], None] | None] = (None, None),
    progress: bool = False,
) -> Stages:
    """Stage 1 then stage 2 at ``layer`` (``callbacks`` per stage); the model is not changed.
    h_r,init is computed once for both stages; the fold map only where stage 2 needs it."""
    la = layer + hp.rel_feat_layer
    batch = rewrite_batch(adapter, request, templates, [hp.kl_prompt]) if batch is None else batch
    _, values = key_value_at(adapter, layer, [(request.prompt, request.subject)])
    v_init = values[0]
    fold = fold_map(adapter, request, hp.for_layer(layer), templates, covariance) if hp.stage2_site == "fold" else None
    with adapter.frozen():
        with torch.no_grad():
            h_init = relation_resid(adapter, batch, la)
        delta1, trace1, prob1 = optimize_relation(adapter, batch, hp, la, callbacks[0], progress, h_init)
        objective = stage2_objective(adapter, batch, hp, layer, la, delta1, v_init, fold, h_init)
        delta2, trace2 = optimize_subject(objective, hp, v_init, callbacks[1], progress)
    return Stages(la, v_init, delta1, trace1, prob1, delta2, trace2, objective, fold)


def compute_layer(
    adapter: ModelAdapter, request: EditRequest, hp: TopHparams, layer: int, templates: Sequence[str],
    covariance: Tensor | None = None, callback: Callable[[StepEvent], None] | None = None,
    progress: bool = False,
) -> tuple[Float[Tensor, "d_mlp d_model"], LayerDetails]:
    """Both stages and the fold at one edit layer; the model is not changed."""
    st = run_stages(adapter, request, hp, layer, templates, covariance=covariance, callbacks=(callback, callback),
                    progress=progress)
    with adapter.frozen():
        reached = st.objective.reached(st.delta2)
    v_star = st.v_init + st.delta2
    fold = st.fold or fold_map(adapter, request, hp.for_layer(layer), templates, covariance)
    details = LayerDetails(layer, st.la, st.trace1, st.trace2, st.objective.targets[0], st.v_init, v_star, st.prob1,
                           reached)
    return fold.delta_w(v_star), details


def compute_top(
    model,
    request: EditRequest,
    hparams: TopHparams = TopHparams(),
    *,
    templates: Sequence[str] | None = None,
    covariance: Tensor | None = None,
    callback: Callable[[StepEvent], None] | None = None,
    progress: bool = False,
) -> WeightEdit:
    """Compute the TOP edit of ``request``; the model is left unchanged.

    With several edit layers each is computed with the earlier layers' updates applied (and
    removed again before returning). ``covariance`` (one C for every layer) overrides the
    corpus statistic. Returns a ``WeightEdit`` with one ΔW_out per layer and ``TopDetails``.
    """
    adapter = as_adapter(model)
    adapter.require_mlp()
    for layer in hparams.layers:
        adapter.check_layer(layer, "TopHparams.layers")
        adapter.check_layer(layer + hparams.rel_feat_layer, "TopHparams.layers + rel_feat_layer")
    templates = tuple(templates or context_templates(adapter, hparams.context_lengths))
    deltas, details = [], []
    with EditHandle(adapter) as handle:
        for layer in hparams.layers:
            delta_w, info = compute_layer(adapter, request, hparams, layer, templates, covariance, callback,
                                          progress)
            deltas.append(LayerDelta(layer, delta_w))
            details.append(info)
            if layer != hparams.layers[-1]:
                handle.add(WeightEdit("top", (request,), (deltas[-1],)))
    summary = TopDetails(tuple(details), hparams.stage2, hparams.key)
    return WeightEdit("top", (request,), tuple(deltas), hparams.to_dict(), summary)


def apply_top(model, requests: EditRequest | Sequence[EditRequest], hparams: TopHparams = TopHparams(),
              **kwargs) -> EditHandle:
    """Compute and apply TOP for one request or several in sequence (each sees the earlier ones).

    Returns the handle; ``handle.revert()`` restores the original weights bit for bit.
    """
    return apply_sequentially(compute_top, model, requests, hparams, **kwargs)


compute = compute_top
apply = apply_top

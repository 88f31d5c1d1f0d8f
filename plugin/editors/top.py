"""TOP (arXiv 2506.04042): a ROME-style edit whose value is found in two stages,
P[o* | v] = P[o* | h_r] · P[h_r | v]:

1. Stage 1 (the relation feature): δ₁ on the residual after block la = l + rel_feat_layer at h_r's
   token of every rewriting prompt (the last; ``relation_position``: core.relation_positions), ROME's
   loss; h*_r = h_r,init + δ₁. ``rel_feat_layer="auto"`` picks la per model or request (core.auto_la).
2. Stage 2 (the subject feature): δ₂ on the MLP output of block l at the last subject token, so
   that the residual at la, h_r's token, reaches h*_r (blocks l..la run); v* = v_init + δ₂.
3. Fold v* into W_out at layer l with the shared rank-one fold (:mod:`toplens.core.fold`).

``stage2="faithful"`` (default) is the published stage 2, vec_loss_factor · ‖h_r(δ₂) − h*_r‖ on the
bare prompt; ``"all_prompts"`` averages it over every rewriting prompt. Ours (docs/top_stage2.md):
``stage2_loss="readout"`` matches h*_r through its readout, KL(P[· | h*_r] ‖ P[· | h_r(δ₂)]), the
``stage2_reset`` positions reset; ``stage2_site="fold"`` optimizes δ₂ as the fold's update (projected with ``project="nullspace"``);
``stage2_rewrite_weight`` adds a ROME term, ``stage2_keep_weight`` a KL holding the model's text about the
subject (core.preservation), ``stage2_keep_reordered`` that text turned round too, ``stage2_leak_weight`` a
penalty on o* overtaking that text's next tokens (core.leak); ``relation_prefix``/``relation_reorder`` a
row led by the relation words / with them before the subject, fitted by stage 2 too (docs/top_stage2.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence, get_args

from jaxtyping import Float
from torch import Tensor

from toplens.core.auto_la import AUTO_LA, AutoLa, settle
from toplens.core.covariance import fold_covariance
from toplens.core.edits import EditHandle, WeightEdit
from toplens.core.nullspace import nullspace_for
from toplens.core.fold import fold_at
from toplens.core.hparams import Hparams, HparamsError
from toplens.core.keys import KEY_MODES, KeyMode, key_value_at
from toplens.core.objective import rewrite_batch, with_rewrite_term
from toplens.core.leak import with_object_kept_out
from toplens.core.preservation import with_subject_kept
from toplens.core.relation_positions import RELATION_POSITIONS, RelationPosition
from toplens.core.relation import RESETS, relation_objective, relation_resid_and_prefix
from toplens.core.relation_ie import relation_ie
from toplens.core.requests import EditRequest
from toplens.core.stages import Observer, Stage
from toplens.core.templates import context_templates, relation_prefixed, relation_reordered, reordered_rows
from toplens.core.value import ValueSettings, rewrite_stage, run_stage
from toplens.editors.base import Editor
from toplens.editors.top_details import LayerDetails, Stages, TopDetails
from toplens.model import ModelAdapter, Site

Stage2 = Literal["faithful", "all_prompts"]
Stage2Loss = Literal["l2", "readout"]
Stage2Site = Literal["subject", "fold"]
Stage2Reset = Literal["others", "others_but_subject", "none", "both"]


@dataclass(frozen=True)
class TopHparams(Hparams):
    """TOP's hyperparameters; the defaults are the published GPT2-XL values."""

    layers: tuple[int, ...] = (17, 18)
    rel_feat_layer: int | Literal["auto"] = 1
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
    stage2_reset: Stage2Reset = "others"
    stage2_rewrite_weight: float = 0.0
    stage2_keep_weight: float = 0.0
    stage2_keep_texts: tuple[int, int] = (5, 10)
    stage2_keep_spare: bool = False
    stage2_keep_reordered: bool = False  # the kept text turned round too: its words, then the subject
    stage2_keep_reordered_scale: float = 1.0  # the turned-round text's weight, in units of stage2_keep_weight
    stage2_leak_weight: float = 0.0  # o* kept from overtaking the subject's text (core.leak)
    relation_position: RelationPosition = "last"
    auto_la: AutoLa = "model"  # where rel_feat_layer="auto" reads la (core.auto_la)
    relation_prefix: bool = False
    relation_reorder: bool = False  # a row in the other word order, fitted by stage 2 too (core.templates)

    def _check(self) -> None:
        self._layers("layers")
        if list(self.layers) != sorted(set(self.layers)):
            raise HparamsError(f"TopHparams.layers must be strictly increasing; got {self.layers!r}")
        self._positive(*(["rel_feat_layer"] if self.rel_feat_layer != "auto" else []), "v_num_grad_steps1",
                       "v_num_grad_steps2")
        self._positive("v_lr", "v_lr2", "clamp_norm_factor", "vec_loss_factor", "early_stop1", "early_stop2",
                       "stage2_keep_reordered_scale")
        self._positive("v_weight_decay", "kl_factor", allow_zero=True)
        for name, allowed in (("key", KEY_MODES), ("stage2", get_args(Stage2)), ("stage2_loss", get_args(Stage2Loss)),
                              ("stage2_site", get_args(Stage2Site)), ("stage2_reset", RESETS),
                              ("relation_position", RELATION_POSITIONS), ("auto_la", AUTO_LA)):
            self._choice(name, allowed)
        self._positive("stage2_rewrite_weight", "stage2_keep_weight", "stage2_leak_weight", allow_zero=True)
        self._positive_items("stage2_keep_texts")  # (count, tokens) of the subject's continuations
        self._template("kl_prompt")
        self._context_lengths()

    @property
    def edit_layers(self) -> tuple[int, ...]:
        return self.layers

    @property
    def stage1_settings(self) -> ValueSettings:
        """Stage 1's settings (δ₁ at la)."""
        return self._loop_mode(ValueSettings(self.v_num_grad_steps1, self.v_lr, self.clamp_norm_factor,
                                              self.early_stop1, self.v_weight_decay, self.kl_factor))

    @property
    def stage2_settings(self) -> ValueSettings:
        """Stage 2's settings (δ₂ at the edit site)."""
        return self._loop_mode(ValueSettings(self.v_num_grad_steps2, self.v_lr2, self.clamp_norm_factor,
                                              self.early_stop2, self.v_weight_decay))

    def with_steps(self, steps: int) -> "TopHparams":
        return self.replace(**dict.fromkeys(("v_num_grad_steps1", "v_num_grad_steps2"), self._check_steps(steps)))

    def relayered(self, scale: Callable[[int], int], n_layers: int) -> "TopHparams":
        layers = tuple(sorted({scale(layer) for layer in self.layers}))
        gap = "auto" if self.rel_feat_layer == "auto" else max(1, min(n_layers - 1 - max(layers),
                                                                      scale(self.rel_feat_layer)))
        return self.replace(layers=layers, rel_feat_layer=gap)


def stages(hp: TopHparams) -> tuple[Stage, ...]:
    """Per edit layer l: stage 1 (δ₁ on the residual after la = l + rel_feat_layer at h_r's token,
    the rewriting objective), then stage 2 (δ₂ on the MLP output of l at the last subject token)."""
    if hp.rel_feat_layer == "auto":
        raise HparamsError("TopHparams.rel_feat_layer='auto' is measured on the model: settle it first "
                           "(toplens.editors.top.EDITOR.settle(model, request, hparams))")
    objective = "relation_readout" if hp.stage2_loss == "readout" else "relation_l2"
    return tuple(s for layer in hp.layers for s in (
        Stage("relation", Site("resid_post", layer + hp.rel_feat_layer), "relation", "rewrite"),
        Stage("subject", Site("value", layer), "subject", objective)))


def run_stages(
    adapter: ModelAdapter, request: EditRequest, hp: TopHparams, layer: int, templates: Sequence[str],
    covariance: Tensor | None = None, observe: Observer | None = None, progress: bool = False, space=None,
) -> Stages:
    """Stage 1 then stage 2 at ``layer``; the model is not changed. h_r,init is computed once."""
    la = layer + hp.rel_feat_layer
    relation, subject = stages(hp.replace(layers=(layer,)))
    ie = relation_ie(adapter, request, la) if hp.relation_position == "max_ie" else None  # h_r's token, measured
    batch = rewrite_batch(adapter, request, templates, [hp.kl_prompt], hp.relation_position, ie and ie.from_end)
    v_init = key_value_at(adapter, layer, [(request.prompt, request.subject)])[1][0]
    c = fold_covariance(adapter, layer, hp.mom2_adjustment, covariance)
    fold = fold_at(adapter, request, layer, templates, key_mode=hp.key, covariance=c, space=space)
    with adapter.frozen():  # the weights take no gradient: h_init builds no graph
        h_init, prefix = relation_resid_and_prefix(adapter, batch, la)  # h_r at every site; rows entering la
        rows = slice(0, 1 + reordered_rows(templates) if hp.stage2 == "faithful" else batch.n_rewrite)
        n_sites, bare = (len(batch.sites("relation", n)[0]) for n in (rows.stop, 1))
        one = rewrite_stage(adapter, batch, relation, h_init[bare - 1], hp.stage1_settings,  # the bare prompt's h_r
                            desc=f"TOP stage 1 L{la}", observe=observe, progress=progress, prefix=prefix)
        site = fold if hp.stage2_site == "fold" else None
        objective = relation_objective(adapter, batch, rows, layer, la, h_init[:n_sites] + one.delta, v_init,
                                       loss=hp.stage2_loss, fold=site, vec_loss_factor=hp.vec_loss_factor,
                                       weight_decay=hp.v_weight_decay, reset=hp.stage2_reset)
        loss = with_rewrite_term(objective, adapter, batch, layer, v_init, hp.stage2_rewrite_weight, hp.kl_factor, site)
        loss = with_subject_kept(loss, adapter, request, layer, v_init, hp.stage2_keep_weight, hp.stage2_keep_texts,
                                 site, hp.stage2_keep_spare, reordered=hp.stage2_keep_reordered * hp.stage2_keep_reordered_scale)
        loss = with_object_kept_out(loss, adapter, request, layer, v_init, hp.stage2_leak_weight,
                                    hp.stage2_keep_texts, site)
        delta2, trace2 = run_stage(adapter, subject, loss, v_init, hp.stage2_settings, desc=f"TOP stage 2 L{layer}",
                                   observe=observe, progress=progress)
    return Stages(la, v_init, one.delta, one.trace, one.target_prob, delta2, trace2, objective, fold, ie)


def compute_one(
    adapter: ModelAdapter,
    request: EditRequest,
    hp: TopHparams,
    *,
    observe: Observer | None = None,
    templates: Sequence[str] | None = None,
    covariance: Float[Tensor, "d_mlp d_mlp"] | None = None,
    progress: bool = False,
) -> WeightEdit:
    """The TOP edit of ``request``: a rank-one ΔW_out per edit layer, each computed with the earlier layers'
    updates applied (removed before returning), and ``TopDetails``; ``covariance`` (every layer's C) overrides C."""
    _check_together(adapter, hp)
    hp, choice = settle(adapter, request, hp)
    templates = relation_prefixed(templates or context_templates(adapter, hp.context_lengths), request.prompt, hp.relation_prefix)
    templates = relation_reordered(templates, request.prompt, hp.relation_reorder)
    deltas, details, spaces = [], [], {layer: nullspace_for(adapter, layer, hp) for layer in hp.layers}
    with EditHandle(adapter) as handle:
        for layer in hp.layers:
            st = run_stages(adapter, request, hp, layer, templates, covariance, observe, progress, spaces[layer])
            with adapter.frozen():
                reached = st.objective.reached(st.delta2)
            v_star = st.v_init + st.delta2
            deltas.append(st.fold.delta(v_star))
            details.append(LayerDetails(layer, st.la, st.trace1, st.trace2, st.objective.h_star, st.v_init,
                                        v_star, st.prob1, reached, st.relation_ie))
            if layer != hp.layers[-1]:
                handle.add(WeightEdit("top", (request,), (deltas[-1],)))
    return WeightEdit("top", (request,), tuple(deltas), hp.to_dict(), TopDetails(tuple(details), hp.stage2, hp.key, choice))


def _check_together(adapter: ModelAdapter, hp: TopHparams) -> None:
    """The checks across fields, made here (not in ``_check``) so that --hparams may set them in any order."""
    for layer in hp.layers if hp.rel_feat_layer != "auto" else ():
        adapter.check_layer(layer + hp.rel_feat_layer, "TopHparams.layers + rel_feat_layer")
    if hp.stage2_reset != "others" and hp.stage2_loss != "readout":
        raise HparamsError(f"TopHparams.stage2_reset={hp.stage2_reset!r} needs stage2_loss='readout'; got {hp.stage2_loss!r}")
    for flag in ("stage2_keep_spare", "stage2_keep_reordered"):
        if getattr(hp, flag) and hp.stage2_keep_weight == 0:
            raise HparamsError(f"TopHparams.{flag}=True needs stage2_keep_weight > 0; got 0.0")
    if hp.stage2_keep_reordered_scale != 1.0 and not hp.stage2_keep_reordered:
        raise HparamsError(f"TopHparams.stage2_keep_reordered_scale={hp.stage2_keep_reordered_scale} needs stage2_keep_reordered=True")


EDITOR = Editor("top", TopHparams, compute_one, stages, settle_for=lambda *a: settle(*a)[0])
compute = EDITOR.compute
apply = EDITOR.apply

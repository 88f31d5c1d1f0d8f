import math

import pytest
import torch

from tests.conftest import param_hash, unchecked

from toplens import EditRequest, ModelAdapter, apply_edit, hook_name
from toplens.editors import top
from toplens.editors.top import TopHparams
from toplens.core.hparams import HparamsError
from toplens.core.interventions import patch_from, set_vectors
from toplens.core.keys import key_value_at
from toplens.core.fold import fold_at
from toplens.core.objective import FoldRewriteObjective, RewriteObjective, rewrite_batch
from toplens.core.relation import (RelationReadoutObjective, relation_objective, relation_resid,
                                   relation_resid_and_prefix)
from toplens.core.value import rewrite_stage
from toplens.core.scoring import target_probability

# The subject comes before the relation words, so stage 2 must reach the last token through
# attention (with the subject last, stage 2 would be trivial).
REQUEST = EditRequest("{} plays the", "Miles Davis", " Paris", " trumpet")
# In random tiny models the subject barely reaches the last token through attention, so the
# tests that need stage 2 to converge or the edit to take put the subject last (stage 2 then acts
# on h_r directly).
SUBJECT_LAST = EditRequest("Miles Davis plays the {}", "trumpet", " Paris", " France")
TEMPLATES = ("{}", "Paris is the capital of France. {}")
FAST = TopHparams(layers=(1,), rel_feat_layer=1, v_num_grad_steps1=15, v_num_grad_steps2=25,
                  v_lr2=1.0, mom2_adjustment=False, context_lengths=((2, 4),))


def _last_token_prob(model, la, h_star=None):
    """P(first target token) at the bare prompt, optionally with h*_r patched in after block la."""
    adapter = ModelAdapter(model)
    tokens = adapter.to_batch([adapter.tokenize(REQUEST.text)])
    last = tokens.shape[1] - 1
    hooks = [] if h_star is None else [set_vectors(hook_name("resid_post", la), h_star[None], [0], [last])]
    target = adapter.tokenize(REQUEST.text + REQUEST.target_new)[tokens.shape[1]]
    with torch.no_grad(), adapter.hooks(hooks):
        return float(adapter.logits(tokens)[0, last].softmax(-1)[target])


@pytest.mark.parametrize("stage2", ["faithful", "all_prompts"])
def test_two_layer_edit_applies_and_reverts_bit_exactly(tiny_model, stage2):
    adapter = ModelAdapter(tiny_model)
    weights = param_hash(tiny_model)
    w_out = [adapter.w_out(layer).detach().clone() for layer in (1, 2)]
    hp = FAST.replace(layers=(1, 2), stage2=stage2, v_num_grad_steps1=8, v_num_grad_steps2=8)
    edit = top.compute(tiny_model, SUBJECT_LAST, hp, templates=TEMPLATES)
    assert param_hash(tiny_model) == weights
    assert edit.method == "top" and edit.layers == (1, 2)
    assert [d["la"] for d in edit.details.summary()["layers"]] == [2, 3]
    before = target_probability(tiny_model, SUBJECT_LAST.text, SUBJECT_LAST.target_new)
    with top.apply(tiny_model, SUBJECT_LAST, hp, templates=TEMPLATES) as handle:
        assert not torch.equal(adapter.w_out(1), w_out[0]) and not torch.equal(adapter.w_out(2), w_out[1])
        assert len(handle.edits) == 1
        after = target_probability(tiny_model, SUBJECT_LAST.text, SUBJECT_LAST.target_new)
    assert param_hash(tiny_model) == weights
    # measured on the four tiny models: +2.5 to +4.8 nats
    assert math.log(after) > math.log(before) + 1.0, (before, after)


def test_stage1_target_predicts_the_new_object(tiny_model):
    adapter = ModelAdapter(tiny_model)
    la = 2
    batch = rewrite_batch(adapter, REQUEST, TEMPLATES, [FAST.kl_prompt])
    relation, _ = top.stages(FAST)
    assert relation.site.layer == la and relation.role == "relation"
    h_init = relation_resid(adapter, batch, la)[0]
    stage1 = rewrite_stage(adapter, batch, relation, h_init, FAST.stage1_settings, desc="stage 1")
    h_star = h_init + stage1.delta
    trace = stage1.trace
    assert trace.losses[-1] < trace.losses[0]
    assert _last_token_prob(tiny_model, la, h_star) > 2 * _last_token_prob(tiny_model, la)


def test_stage_one_from_the_shared_prefix_is_stage_one_from_its_own(tiny_model):
    """run_stages reads h_r and stage 1's prefix (the residual entering la) off one forward pass;
    the prefix is the one RewriteObjective computes for itself, bit for bit, and so is stage 1."""
    adapter, la = ModelAdapter(tiny_model), 2
    batch = rewrite_batch(adapter, REQUEST, TEMPLATES, [FAST.kl_prompt])
    relation, _ = top.stages(FAST)
    with adapter.frozen():
        h_init, prefix = relation_resid_and_prefix(adapter, batch, la)
        assert torch.equal(h_init, relation_resid(adapter, batch, la))
        assert torch.equal(prefix, adapter.resid_before(batch.tokens, la))
        shared = rewrite_stage(adapter, batch, relation, h_init[0], FAST.stage1_settings, desc="s", prefix=prefix)
        own = rewrite_stage(adapter, batch, relation, h_init[0], FAST.stage1_settings, desc="s")
    assert torch.equal(shared.delta, own.delta) and shared.trace.losses == own.trace.losses


def test_a_users_hook_entering_la_acts_once_in_stage_one_from_the_shared_prefix(tiny_model):
    """The shared prefix is read before block la's hooks, so a user's hook there (active around the
    whole edit) acts once per step, as it does on the prefix RewriteObjective computes itself."""
    adapter, la = ModelAdapter(tiny_model), 2
    batch = rewrite_batch(adapter, REQUEST, TEMPLATES, [FAST.kl_prompt])
    relation, _ = top.stages(FAST)
    with adapter.frozen(), adapter.hooks([(hook_name("resid_pre", la), lambda act, hook: act + 0.5)]):
        h_init, prefix = relation_resid_and_prefix(adapter, batch, la)
        shared = rewrite_stage(adapter, batch, relation, h_init[0], FAST.stage1_settings, desc="s", prefix=prefix)
        own = rewrite_stage(adapter, batch, relation, h_init[0], FAST.stage1_settings, desc="s")
    assert torch.equal(shared.delta, own.delta) and shared.trace.losses == own.trace.losses


def test_folded_edit_moves_the_relation_feature_to_h_star(tiny_model):
    adapter = ModelAdapter(tiny_model)
    # a weaker decay and a wider clamp than FAST's: on the bridges' small v_init the decay term
    # would otherwise outweigh the distance and keep δ₂ near zero
    hp = FAST.replace(stage2="faithful", key="original", v_num_grad_steps2=40, v_weight_decay=0.1,
                      clamp_norm_factor=10.0)
    edit = top.compute(tiny_model, SUBJECT_LAST, hp, templates=("{}",))
    info = edit.details.layers[0]
    la, start_distance = info.la, info.stage2.parts[0]["distance"]
    end_distance = info.stage2.parts[-1]["distance"]
    batch = rewrite_batch(adapter, SUBJECT_LAST, ("{}",), [hp.kl_prompt])
    with apply_edit(tiny_model, edit):
        # the fold writes v* for the subject's key exactly
        v_now = key_value_at(adapter, 1, [(SUBJECT_LAST.prompt, SUBJECT_LAST.subject)])[1][0]
        torch.testing.assert_close(v_now, info.v_star, atol=1e-4, rtol=1e-4)
        h_edited = relation_resid(adapter, batch, la)[0]
    folded_distance = float((h_edited - info.h_star).norm())
    assert end_distance < 0.5 * start_distance
    # other tokens' MLP outputs move a little too (the update is rank one, not one token only):
    # measured |folded - end| of 0.01 to 0.14 and folded of 0.06 to 0.35 times the start distance
    assert abs(folded_distance - end_distance) < 0.2 * start_distance
    assert folded_distance < 0.5 * start_distance
    if info.stage2.converged:
        assert folded_distance <= 1.25 * hp.early_stop2 / hp.vec_loss_factor


@pytest.mark.parametrize("key", ["consistent", "original"])
def test_stage2_through_the_fold_sees_exactly_the_folded_model(tiny_model, key):
    """With stage2_site="fold" stage 2 optimizes the rank-one update itself, so the distance it
    ends at is the folded model's distance to h*_r (the subject-only site misses the fold's
    effect on the other positions and, with a template-mean key, its scale)."""
    adapter = ModelAdapter(tiny_model)
    hp = FAST.replace(stage2_site="fold", key=key, v_num_grad_steps2=15)
    edit = top.compute(tiny_model, SUBJECT_LAST, hp, templates=TEMPLATES)
    info = edit.details.layers[0]
    batch = rewrite_batch(adapter, SUBJECT_LAST, TEMPLATES, [hp.kl_prompt])
    with apply_edit(tiny_model, edit):
        folded = float((relation_resid(adapter, batch, info.la)[0] - info.h_star).norm())
    assert info.stage2.parts[-1]["distance"] < info.stage2.parts[0]["distance"]
    # the loop reports the loss before its last step; recompute at the final δ₂
    fold = fold_at(adapter, SUBJECT_LAST, 1, TEMPLATES, key_mode=key)
    objective_now = relation_objective(adapter, batch, slice(0, 1), 1, info.la, info.h_star[None], info.v_init,
                                       fold=fold, vec_loss_factor=hp.vec_loss_factor, weight_decay=hp.v_weight_decay)
    with torch.no_grad():
        at_end = objective_now(info.v_star - info.v_init).distance
    assert at_end == pytest.approx(folded, rel=1e-4, abs=1e-4)


def test_bad_stage2_reset_and_rewrite_weight_are_rejected():
    with unchecked(), pytest.raises(HparamsError, match="stage2_reset"):
        TopHparams(stage2_reset="subject")
    with unchecked(), pytest.raises(HparamsError, match="stage2_rewrite_weight"):
        TopHparams(stage2_rewrite_weight=-1.0)


def test_bad_stage2_site_is_rejected():
    with unchecked(), pytest.raises(HparamsError, match="stage2_site"):
        TopHparams(stage2_site="everywhere")


def test_summary_and_round_trip(tiny_model):
    edit = top.compute(tiny_model, REQUEST, FAST.replace(v_num_grad_steps1=3, v_num_grad_steps2=3),
                       templates=TEMPLATES)
    (layer,) = edit.details.summary()["layers"]
    assert set(layer) >= {"la", "stage1_steps", "stage2_steps", "stage1_final_loss", "stage2_final_loss"}
    assert edit.details.layers[0].h_star.shape == (tiny_model.cfg.d_model,)
    assert TopHparams.from_json(FAST.to_json()) == FAST


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(layers=()), "TopHparams.layers"),
        (dict(layers=(3, 2)), "TopHparams.layers"),
        (dict(rel_feat_layer=0), "TopHparams.rel_feat_layer"),
        (dict(v_lr2=0.0), "TopHparams.v_lr2"),
        (dict(stage2="fast"), "TopHparams.stage2"),
        (dict(key="mean"), "TopHparams.key"),
        (dict(kl_prompt="no subject"), "TopHparams.kl_prompt"),
        (dict(vec_loss_factor=float("nan")), "TopHparams.vec_loss_factor"),
    ],
)
def test_bad_hparams_name_the_field(change, field):
    with unchecked(), pytest.raises(HparamsError, match=field):
        FAST.replace(**change)


def test_la_beyond_the_model_is_rejected_before_any_work(tiny_model):
    with pytest.raises(ValueError, match="rel_feat_layer"):
        top.compute(tiny_model, REQUEST, FAST.replace(layers=(3,)), templates=TEMPLATES)


def test_readout_stage2_matches_stage1_prediction(tiny_model):
    """The "readout" stage 2 lowers KL(P[·|h*_r] ‖ P[·|h_r(δ₂)]) and the edit takes."""
    hp = FAST.replace(stage2_loss="readout", v_num_grad_steps2=30)
    edit = top.compute(tiny_model, SUBJECT_LAST, hp, templates=("{}",))
    info = edit.details.layers[0]
    kls = [p["kl"] for p in info.stage2.parts]
    assert kls[0] > 0 and min(kls) < 0.5 * kls[0]
    before = target_probability(tiny_model, SUBJECT_LAST.text, SUBJECT_LAST.target_new)
    with apply_edit(tiny_model, edit):
        after = target_probability(tiny_model, SUBJECT_LAST.text, SUBJECT_LAST.target_new)
    # measured on the four tiny models: +2.5 to +4.5 nats
    assert math.log(after) > math.log(before) + 1.0, (before, after)


def test_readout_reaches_the_prediction_only_through_h_r(tiny_model):
    """δ₁ = 0 gives KL 0 at δ₂ = 0; δ₂ has a gradient through h_r, and none once h_r is reset too."""
    adapter = ModelAdapter(tiny_model)
    hp = FAST.replace(stage2_loss="readout")
    batch = rewrite_batch(adapter, REQUEST, ("{}",), [hp.kl_prompt])
    la = 1 + hp.rel_feat_layer
    unit = torch.ones(adapter.d_model) / adapter.d_model**0.5  # v_init of norm 1: the decay's reference
    h_init = relation_resid(adapter, batch, la)[:1]
    objective = relation_objective(adapter, batch, slice(0, 1), 1, la, h_init, unit, loss="readout",
                                   vec_loss_factor=hp.vec_loss_factor, weight_decay=hp.v_weight_decay)
    assert isinstance(objective, RelationReadoutObjective)
    assert objective(torch.zeros(adapter.d_model)).kl == pytest.approx(0.0, abs=1e-6)

    def grad_norm() -> float:
        delta = (0.1 * torch.randn(adapter.d_model, generator=torch.Generator().manual_seed(0))).requires_grad_()
        objective(delta).total.backward()
        return float(delta.grad.norm())

    assert grad_norm() > 0
    (clean,) = adapter.capture(objective.tokens, [hook_name("resid_post", la)], la + 1)
    objective._keep_clean = patch_from(hook_name("resid_post", la), clean, torch.ones(clean.shape[:2]))
    # only the weight decay's gradient is left: its norm is weight_decay / ref_norm²
    assert grad_norm() == pytest.approx(hp.v_weight_decay, rel=1e-4)


def test_unknown_stage2_loss_is_rejected():
    with unchecked(), pytest.raises(HparamsError, match="TopHparams.stage2_loss"):
        FAST.replace(stage2_loss="cosine")


@pytest.mark.parametrize("reset, spared", [("others", 1), ("others_but_subject", 2), ("none", None)])
def test_readout_reset_masks_the_stated_positions(tiny_model, reset, spared):
    """The readout resets every position but the last relation token (and the subject's, with
    "others_but_subject") to its clean residual at la; "none" resets nothing."""
    adapter = ModelAdapter(tiny_model)
    batch = rewrite_batch(adapter, REQUEST, TEMPLATES, [FAST.kl_prompt])
    _, values = key_value_at(adapter, 1, [(REQUEST.prompt, REQUEST.subject)])
    objective = relation_objective(adapter, batch, slice(0, 1), 1, 2, torch.zeros(1, tiny_model.cfg.d_model),
                                   values[0], loss="readout", reset=reset)
    mask = objective._reset_mask(batch.tokens[:1].shape)
    kept = int((~mask[0]).sum())
    assert kept == (batch.tokens.shape[1] if spared is None else spared)
    assert not mask[0, batch.last_relation[0]]
    assert bool(mask[0, batch.last_subject[0]]) == (reset == "others")


def test_readout_reset_both_averages_the_reset_and_the_plain_kl(tiny_model):
    """reset="both" is the mean of the readout KL with the reset ("others") and without ("none")."""
    adapter = ModelAdapter(tiny_model)
    batch = rewrite_batch(adapter, REQUEST, TEMPLATES, [FAST.kl_prompt])
    _, values = key_value_at(adapter, 1, [(REQUEST.prompt, REQUEST.subject)])
    delta = torch.randn(tiny_model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    kl = {}
    for reset in ("others", "none", "both"):
        objective = relation_objective(adapter, batch, slice(0, 1), 1, 2, torch.zeros(1, tiny_model.cfg.d_model),
                                       values[0], loss="readout", reset=reset)
        kl[reset] = objective(delta).kl
    assert kl["others"] != pytest.approx(kl["none"], rel=1e-3)
    assert kl["both"] == pytest.approx(0.5 * (kl["others"] + kl["none"]), rel=1e-5)


@pytest.mark.parametrize("site", ["fold", "subject"])
def test_rewrite_term_in_stage2_lowers_the_rewrite_nll(tiny_model, site):
    """A ROME term in stage 2 (through the fold) is part of the loss: the NLL it reports falls
    during stage 2, and the folded edit fits the rewriting prompts better than without it
    (ROME's loss recomputed at each edit's v*, at the same site)."""
    adapter = ModelAdapter(tiny_model)
    hp = FAST.replace(stage2_loss="readout", stage2_site=site, v_num_grad_steps2=20)
    batch = rewrite_batch(adapter, REQUEST, TEMPLATES, [hp.kl_prompt])
    fold = fold_at(adapter, REQUEST, 1, TEMPLATES)
    nll = []
    for weight in (0.0, 10.0):
        info = top.compute(tiny_model, REQUEST, hp.replace(stage2_rewrite_weight=weight),
                           templates=TEMPLATES).details.layers[0]
        args = (adapter, batch, hook_name("value", 1), 1, "subject", hp.kl_factor, 0.0, 1.0)
        rewrite = (FoldRewriteObjective(*args, fold=fold, v_init=info.v_init) if site == "fold"
                   else RewriteObjective(*args))
        with torch.no_grad():
            nll.append(rewrite(info.v_star - info.v_init).nll)
    reported = [p["rewrite_nll"] for p in info.stage2.parts]
    assert reported[-1] < reported[0]
    assert nll[1] < nll[0], nll


def test_a_reset_without_the_readout_is_refused_before_any_work(tiny_hooked):
    """stage2_reset acts only on the readout loss; with the L2 loss it is refused by compute
    (not by the dataclass, so a command line can override either field first)."""
    hp = FAST.replace(stage2_reset="none")
    with pytest.raises(HparamsError, match="stage2_reset='none' needs stage2_loss='readout'"):
        top.compute(tiny_hooked, REQUEST, hp, templates=TEMPLATES)


def test_the_relation_prefix_is_one_more_rewriting_row_and_nothing_else(tiny_model):
    """relation_prefix=True gives the edit computed with the prompt's relation-words row appended to
    the context templates by hand, to the bit."""
    from toplens.core.templates import context_templates, relation_prefixed
    hp = FAST.replace(stage2="all_prompts")
    on = top.compute(tiny_model, REQUEST, hp.replace(relation_prefix=True))
    rows = relation_prefixed(context_templates(tiny_model, hp.context_lengths), REQUEST.prompt)
    by_hand = top.compute(tiny_model, REQUEST, hp, templates=rows)
    off = top.compute(tiny_model, REQUEST, hp)
    assert rows[-1] == "plays the: {}"
    assert torch.equal(on.deltas[0].delta, by_hand.deltas[0].delta)
    assert not torch.equal(on.deltas[0].delta, off.deltas[0].delta)


def test_a_sink_edit_of_a_first_token_subject_maps_both_keys_and_reverts_bit_exactly(tiny_model):
    """key="sink": where the subject is one token at the first position (no BOS), TOP's fold maps
    the templates' mean key and the bare prompt's key (rank 2), and stage 2 optimizes through that
    fold; elsewhere (a BOS first) it is the consistent fold. Either way the edit reverts bit for bit."""
    from toplens.core.sink import at_sink
    from tests.plugin.core.test_fold import FIRST
    adapter = ModelAdapter(tiny_model)
    weights = param_hash(tiny_model)
    hp = FAST.replace(key="sink", v_num_grad_steps1=6, v_num_grad_steps2=6)
    edit = top.compute(tiny_model, FIRST, hp, templates=TEMPLATES)
    assert edit.deltas[0].rank == (2 if at_sink(adapter, FIRST) else 1)
    consistent = top.compute(tiny_model, FIRST, hp.replace(key="consistent"), templates=TEMPLATES)
    assert consistent.deltas[0].rank == 1
    with apply_edit(tiny_model, edit):
        assert param_hash(tiny_model) != weights
    assert param_hash(tiny_model) == weights


def test_the_reordered_row_is_fitted_by_stage_2_beside_the_bare_prompt(tiny_model):
    """relation_reorder=True: the relation-first row follows the bare prompt, and the published
    single-prompt stage 2 then fits both rows (its h*_r sites are two); the edit reverts bit for bit."""
    from toplens.core.templates import relation_reordered
    adapter = ModelAdapter(tiny_model)
    weights = param_hash(tiny_model)
    hp = FAST.replace(v_num_grad_steps1=6, v_num_grad_steps2=6)
    on = top.compute(tiny_model, REQUEST, hp.replace(relation_reorder=True), templates=TEMPLATES)
    by_hand = top.compute(tiny_model, REQUEST, hp, templates=relation_reordered(TEMPLATES, REQUEST.prompt))
    off = top.compute(tiny_model, REQUEST, hp, templates=TEMPLATES)
    assert torch.equal(on.deltas[0].delta, by_hand.deltas[0].delta)
    assert not torch.equal(on.deltas[0].delta, off.deltas[0].delta)
    sites = lambda rows: top.run_stages(adapter, REQUEST, hp, 1, rows).objective.targets.shape[0]  # noqa: E731
    assert (sites(relation_reordered(TEMPLATES, REQUEST.prompt)), sites(TEMPLATES)) == (2, 1)  # stage 2's h*_r
    with apply_edit(adapter, on):
        assert param_hash(tiny_model) != weights
    assert param_hash(tiny_model) == weights
    later = EditRequest("The instrument of {} is the", "Miles Davis", " Paris", " trumpet")
    plain = top.compute(tiny_model, later, hp, templates=TEMPLATES)  # already relation-first: no row
    assert torch.equal(top.compute(tiny_model, later, hp.replace(relation_reorder=True), templates=TEMPLATES
                                   ).deltas[0].delta, plain.deltas[0].delta)

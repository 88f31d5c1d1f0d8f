"""The subject's own text kept: the model's continuations of the subject, a KL that is zero for
no change and grows with δ, a penalty the "fit" stop leaves out, and a TOP stage 2 that, given
the term, moves that text less."""

import dataclasses

import pytest
import torch

from toplens import ModelAdapter
from toplens.core.fold import fold_at
from toplens.core.keys import key_value_at
from toplens.core.optimize import LoopSettings, LossTerms
from toplens.core.positions import target_ids
from toplens.core import preservation
from toplens.core.preservation import SubjectPreservation, WithPenalty, objects_first_tokens, subject_texts
from toplens.editors import top
from tests.plugin.editors.test_top import FAST, REQUEST, TEMPLATES


def _objective(adapter, fold=None):
    tokens, last = subject_texts(adapter, REQUEST.subject, 3, 4)
    v_init = key_value_at(adapter, 1, [(REQUEST.prompt, REQUEST.subject)])[1][0]
    return SubjectPreservation(adapter, tokens, last, 1, v_init, fold), v_init


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
def test_the_texts_start_with_the_subject_and_repeat_under_a_seed(request, name):
    adapter = ModelAdapter(request.getfixturevalue(name))
    tokens, last = subject_texts(adapter, REQUEST.subject, 3, 4, seed=1)
    ids = adapter.tokenize(REQUEST.subject)
    assert tokens.shape == (3, len(ids) + 4) and last == len(ids) - 1
    assert all(row[: len(ids)].tolist() == ids for row in tokens)
    assert torch.equal(tokens, subject_texts(adapter, REQUEST.subject, 3, 4, seed=1)[0])


@pytest.mark.parametrize("site", ["fold", "subject"])
def test_the_kl_is_zero_without_a_change_and_grows_with_delta(tiny_model, site):
    adapter = ModelAdapter(tiny_model)
    fold = fold_at(adapter, REQUEST, 1, TEMPLATES) if site == "fold" else None
    objective, v_init = _objective(adapter, fold)
    zero = torch.zeros_like(v_init)
    if site == "subject":  # nothing added: the clean model (the fold moves W_out by v_init - v_cur even at δ = 0)
        assert objective(zero).kl == pytest.approx(0.0, abs=1e-6)
    delta = torch.randn(v_init.shape, generator=torch.Generator().manual_seed(0)) * v_init.norm()
    kls = [objective(scale * delta).kl for scale in (0.0, 3.0)]
    assert 0 <= kls[0] < kls[1]
    delta.requires_grad_(True)
    objective(delta).total.backward()
    assert delta.grad is not None and float(delta.grad.norm()) > 0


def test_the_penalty_adds_to_the_total_and_the_fit_stop_leaves_it_out():
    main = lambda d: LossTerms(d.sum() * 0 + 0.01, kl=0.01)  # noqa: E731  a fit below the stop
    penalty = lambda d: LossTerms(d.sum() * 0 + 2.0, kl=2.0)  # noqa: E731
    terms = WithPenalty(main, penalty, 0.5)(torch.zeros(3))
    assert float(terms.total) == pytest.approx(1.01) and terms.penalty == pytest.approx(1.0)
    assert LoopSettings(5, 0.1, None, 0.05, stop_rule="fit").stops(terms)
    assert not LoopSettings(5, 0.1, None, 0.05, stop_rule="total").stops(terms)


def test_stacked_penalties_add_up_and_the_fit_stop_leaves_both_out():
    main = lambda d: LossTerms(d.sum() * 0 + 0.01, kl=0.01)  # noqa: E731
    penalty = lambda d: LossTerms(d.sum() * 0 + 2.0, kl=2.0)  # noqa: E731
    terms = WithPenalty(WithPenalty(main, penalty, 0.5), penalty, 0.25)(torch.zeros(3))
    assert float(terms.total) == pytest.approx(1.51) and terms.penalty == pytest.approx(1.5)
    assert LoopSettings(5, 0.1, None, 0.05, stop_rule="fit").stops(terms)


def test_top_with_the_term_moves_the_subjects_text_less(tiny_model):
    adapter = ModelAdapter(tiny_model)
    hp = FAST.replace(stage2_loss="readout", stage2_site="fold", stage2_reset="none", v_num_grad_steps2=20)
    fold = fold_at(adapter, REQUEST, 1, TEMPLATES)
    objective, _ = _objective(adapter, fold)
    kept = []
    for weight in (0.0, 20.0):
        info = top.compute(tiny_model, REQUEST, hp.replace(stage2_keep_weight=weight, stage2_keep_texts=(3, 4)),
                           templates=TEMPLATES).details.layers[0]
        with torch.no_grad():
            kept.append(objective(info.v_star - info.v_init).kl)
    assert "penalty" in info.stage2.parts[-1]
    assert kept[1] < kept[0], kept


def test_the_objects_first_tokens_are_those_that_follow_the_prompt(tiny_model):
    adapter = ModelAdapter(tiny_model)
    prompt = REQUEST.prompt.replace("{}", REQUEST.subject)
    new, true = (target_ids(adapter, prompt, t)[0] for t in (REQUEST.target_new, REQUEST.target_true))
    assert objects_first_tokens(adapter, REQUEST) == tuple(dict.fromkeys((new, true)))
    assert objects_first_tokens(adapter, dataclasses.replace(REQUEST, target_true=None)) == (new,)


def test_spared_tokens_leave_the_kept_distribution_and_moving_them_changes_nothing(tiny_model):
    adapter = ModelAdapter(tiny_model)
    objective, v_init = _objective(adapter)
    spared = objects_first_tokens(adapter, REQUEST)
    kept = SubjectPreservation(adapter, objective.tokens, objective.last_subject, 1, v_init, spared=spared)
    logits = torch.randn(4, adapter.embedding_matrix().shape[0], generator=torch.Generator().manual_seed(0))
    moved = logits.clone()
    moved[:, list(spared)] += 5.0  # more of o*, less of everything else: only the spared columns change
    a, b = kept._log_probs(logits), kept._log_probs(moved)
    assert a.shape == (4, logits.shape[1] - len(spared)) and torch.allclose(a.exp().sum(-1), torch.ones(4))
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(objective._log_probs(logits),
                                                                 objective._log_probs(moved))
    assert kept(torch.zeros_like(v_init)).kl == pytest.approx(0.0, abs=1e-6)  # no change: no KL, spared or not


def test_top_spares_o_and_o_star_when_asked(tiny_model, monkeypatch):
    hp = FAST.replace(stage2_loss="readout", stage2_site="fold", stage2_reset="none", stage2_keep_weight=5.0,
                      stage2_keep_texts=(3, 4))
    built = []

    class Recorded(SubjectPreservation):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self.spared)

    monkeypatch.setattr(preservation, "SubjectPreservation", Recorded)
    plain, spared = (top.compute(tiny_model, REQUEST, hp.replace(stage2_keep_spare=s), templates=TEMPLATES)
                     for s in (False, True))
    adapter = ModelAdapter(tiny_model)
    o_star = target_ids(adapter, REQUEST.text, REQUEST.target_new)[0]
    assert built[0] == () and o_star in built[1] and set(built[1]) == set(objects_first_tokens(adapter, REQUEST))
    assert "penalty" in spared.details.layers[0].stage2.parts[-1]
    assert not torch.equal(plain.deltas[0].v, spared.deltas[0].v)  # the spared term is another objective


def test_the_turned_round_text_ends_with_the_subject_and_is(tiny_model):
    from toplens.core.preservation import reordered_subject_texts
    adapter = ModelAdapter(tiny_model)
    plain, last = subject_texts(adapter, REQUEST.subject, 3, 4)
    rows, at = reordered_subject_texts(adapter, REQUEST.subject, 3, 4)
    lead = len(adapter.tokenize(""))
    assert torch.equal(rows[:, lead: lead + 4], plain[:, last + 1:])  # the continuation's own tokens lead
    subject = adapter.tokenizer(" " + REQUEST.subject, add_special_tokens=False)["input_ids"]
    copula = adapter.tokenizer(" is", add_special_tokens=False)["input_ids"]
    for row in rows:  # the subject's tokens end at ``at``, and only the copula follows them
        assert row[at + 1 - len(subject): at + 1].tolist() == subject and row[at + 1:].tolist() == copula
        assert adapter.tokenizer.decode(row[lead:]).rstrip().endswith("is")


def test_top_keeps_the_turned_round_text_only_when_asked(tiny_model, monkeypatch):
    from toplens.core.hparams import HparamsError
    hp = FAST.replace(stage2_loss="readout", stage2_site="fold", stage2_reset="none", stage2_keep_weight=5.0,
                      stage2_keep_texts=(3, 4), stage2_keep_spare=True)
    built = []

    class Recorded(SubjectPreservation):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append((self.tokens.shape, self.spared))

    monkeypatch.setattr(preservation, "SubjectPreservation", Recorded)
    plain = top.compute(tiny_model, REQUEST, hp, templates=TEMPLATES)
    assert len(built) == 1
    both = top.compute(tiny_model, REQUEST, hp.replace(stage2_keep_reordered=True), templates=TEMPLATES)
    assert len(built) == 3 and built[2][1] == () and built[2][0][1] > built[1][0][1]  # o* not spared there
    assert not torch.equal(plain.deltas[0].v, both.deltas[0].v)
    with pytest.raises(HparamsError, match="stage2_keep_reordered=True needs stage2_keep_weight > 0"):
        top.compute(tiny_model, REQUEST, FAST.replace(stage2_keep_reordered=True), templates=TEMPLATES)


def test_the_turned_round_text_takes_its_own_share_of_the_keep_weight(tiny_model, monkeypatch):
    from toplens.core.hparams import HparamsError
    hp = FAST.replace(stage2_loss="readout", stage2_site="fold", stage2_reset="none", stage2_keep_weight=4.0,
                      stage2_keep_texts=(3, 4), stage2_keep_reordered=True)
    weights = []

    class Recorded(WithPenalty):
        def __init__(self, *args):
            super().__init__(*args)
            weights.append(self.weight)

    monkeypatch.setattr(preservation, "WithPenalty", Recorded)
    full = top.compute(tiny_model, REQUEST, hp, templates=TEMPLATES)
    assert weights == [4.0, 4.0]
    quarter = top.compute(tiny_model, REQUEST, hp.replace(stage2_keep_reordered_scale=0.25), templates=TEMPLATES)
    assert weights[2:] == [4.0, 1.0]
    assert not torch.equal(full.deltas[0].v, quarter.deltas[0].v)
    with pytest.raises(HparamsError, match="stage2_keep_reordered_scale"):
        hp.replace(stage2_keep_reordered_scale=0.0)
    with pytest.raises(HparamsError, match=r"stage2_keep_reordered_scale=0.25 needs stage2_keep_reordered=True"):
        top.compute(tiny_model, REQUEST, hp.replace(stage2_keep_reordered=False, stage2_keep_reordered_scale=0.25))

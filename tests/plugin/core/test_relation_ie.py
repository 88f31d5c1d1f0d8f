"""relation_position="max_ie": h_r read at the token after the subject whose clean state at la,
restored into the subject-corrupted run, recovers most of P(o); measured on the bare prompt and
carried to every rewriting row as a distance from the last token."""

import dataclasses
import math

import pytest
import torch

from toplens import EditRequest, ModelAdapter
from toplens.core.objective import rewrite_batch
from toplens.core.positions import locate
from toplens.core import relation_ie as relation_ie_module
from toplens.core.relation_ie import relation_ie
from toplens.core.relation_positions import relation_position
from toplens.core.scoring import top_tokens
from toplens.editors import top
from tests.plugin.editors.test_top import FAST, TEMPLATES

QUESTION = EditRequest("Q: Which instrument does {} play? A:", "Miles Davis", " Paris")


def _known(adapter: ModelAdapter) -> EditRequest:
    """QUESTION with the tiny model's own top next token as the true object."""
    return EditRequest(QUESTION.prompt, QUESTION.subject, QUESTION.target_new,
                       top_tokens(adapter, QUESTION.text, 1)[0].token)


def test_after_the_last_block_only_the_last_token_carries_the_answer(tiny_model):
    """Restored after the final block, the last token's state is the whole prediction (its effect
    is the full gap, clean − corrupted) and no other token's state reaches it (effect 0)."""
    adapter = ModelAdapter(tiny_model)
    ie = relation_ie(adapter, _known(adapter), adapter.n_layers - 1, min_gap=-math.inf)  # a random model: any gap
    pos = locate(adapter, QUESTION.prompt, QUESTION.subject)
    assert ie.positions == tuple(pos.relation_span)
    assert ie.effects[-1] == pytest.approx(ie.clean - ie.corrupted, abs=1e-4)
    assert all(abs(e) < 1e-5 for e in ie.effects[:-1])


def test_the_choice_is_the_largest_effect_and_the_last_token_where_nothing_moves(tiny_model):
    adapter = ModelAdapter(tiny_model)
    ie = relation_ie(adapter, _known(adapter), 1, min_gap=-math.inf)
    best = max(range(len(ie.positions)), key=lambda i: (ie.effects[i], i))
    assert ie.chosen == ie.positions[best] and ie.from_end == ie.positions[-1] - ie.positions[best]
    flat = relation_ie(adapter, _known(adapter), 1, n_samples=2, min_gap=2.0)  # no gap is large enough
    assert flat.from_end == 0 and all(math.isnan(e) for e in flat.effects)


def test_every_rewriting_row_reads_h_r_at_the_measured_word(tiny_model):
    adapter = ModelAdapter(tiny_model)
    batch = rewrite_batch(adapter, QUESTION, TEMPLATES, ["{} is a"], "max_ie", 2)
    rows = slice(0, batch.n_rewrite)
    assert torch.equal(batch.relation_at[rows], batch.last_relation[rows] - 2)
    kl = locate(adapter, "{} is a", QUESTION.subject)  # too short for 2 from the end: clipped after the subject
    assert int(batch.relation_at[-1]) == max(kl.last_subject + 1, kl.last_relation - 2)
    pos = locate(adapter, QUESTION.prompt, QUESTION.subject)
    with pytest.raises(ValueError, match="relation_position='max_ie' needs the measured from_end.*None"):
        relation_position(adapter, pos, "max_ie")
    with pytest.raises(ValueError, match="from_end.*-1"):
        relation_position(adapter, pos, "max_ie", -1)


def test_top_reads_h_r_where_the_effect_is_largest(tiny_model, monkeypatch):
    """TOP takes h_r at the measured word: the measurement is wrapped so that it picks a word two
    tokens before the last one (a random model's effects often pick the last token itself, which
    the last-token rule would read too), and stage 1's δ₁ is measured at that word."""
    monkeypatch.setattr(relation_ie_module, "MIN_GAP", -math.inf)  # a random model's gap may be any size
    measured = []

    def two_before_the_end(*args, **kwargs):
        measured.append(dataclasses.replace(relation_ie(*args, **kwargs), from_end=2))
        return measured[-1]

    monkeypatch.setattr(top, "relation_ie", two_before_the_end)
    adapter = ModelAdapter(tiny_model)
    request = _known(adapter)
    hp = FAST.replace(stage2_loss="readout", relation_position="max_ie")
    deltas = {}
    observe = lambda stage, event: deltas.__setitem__(stage.name, event.delta.detach().clone())  # noqa: E731
    edit = top.compute(tiny_model, request, hp, templates=TEMPLATES, observe=observe)
    details = edit.details.layers[0]
    assert len(measured) == 1 and details.relation_ie == measured[0] and edit.hparams["relation_position"] == "max_ie"
    assert edit.details.summary()["layers"][0]["relation_from_end"] == 2
    at = rewrite_batch(adapter, request, TEMPLATES, [hp.kl_prompt], "max_ie", 2)
    assert int(at.relation_at[0]) == int(at.last_relation[0]) - 2
    (resid,) = adapter.capture(at.tokens[:1], [f"blocks.{details.la}.hook_resid_post"], details.la + 1)
    h_init, h_last = resid[0, int(at.relation_at[0])], resid[0, int(at.last_relation[0])]
    assert not torch.allclose(h_init, h_last, atol=1e-3)  # two different words
    assert torch.allclose(details.h_star, h_init + deltas["relation"], atol=1e-4)  # h*_r = h_r,init + δ₁ at the word

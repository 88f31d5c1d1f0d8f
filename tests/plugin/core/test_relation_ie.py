"""relation_position="max_ie": h_r read at the token after the subject whose clean state at la,
restored into the subject-corrupted run, recovers most of P(o); measured on the bare prompt and
carried to every rewriting row as a distance from the last token."""

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
    monkeypatch.setattr(relation_ie_module, "MIN_GAP", -math.inf)  # a random model's gap may be any size
    adapter = ModelAdapter(tiny_model)
    request = _known(adapter)
    hp = FAST.replace(stage2_loss="readout", relation_position="max_ie")
    edit = top.compute(tiny_model, request, hp, templates=TEMPLATES)
    details = edit.details.layers[0]
    measured = relation_ie(adapter, request, details.la)
    assert details.relation_ie.effects == pytest.approx(measured.effects, abs=1e-6)
    assert details.relation_ie.from_end == measured.from_end and edit.hparams["relation_position"] == "max_ie"
    assert edit.details.summary()["layers"][0]["relation_from_end"] == measured.from_end
    at = rewrite_batch(adapter, request, TEMPLATES, [hp.kl_prompt], "max_ie", measured.from_end)
    (resid,) = adapter.capture(at.tokens[:1], [f"blocks.{details.la}.hook_resid_post"], details.la + 1)
    h_init = resid[0, int(at.relation_at[0])]
    assert float((details.h_star - h_init).norm()) == pytest.approx(details.delta1_norm, rel=1e-3)

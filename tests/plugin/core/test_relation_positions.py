"""Where h_r is read: the last token by default; "last_content" the last word after the subject
that is not a function word, "after_subject" the first token after it, never a token before the
subject (stage 2 could not reach it); TOP then adds δ₁ and reads h_r there while the target is
still predicted at the last token."""

import pytest
import torch

from toplens import EditRequest, ModelAdapter
from toplens.core.hparams import HparamsError
from toplens.core.objective import rewrite_batch
from toplens.core.positions import locate
from toplens.core.relation import relation_objective, relation_resid
from toplens.core.relation_positions import is_content, relation_position
from toplens.editors import top
from tests.conftest import unchecked
from tests.plugin.editors.test_top import FAST, TEMPLATES

QUESTION = EditRequest("Q: Which instrument does {} play? A:", "Miles Davis", " Paris", " trumpet")


def test_content_words_are_words_that_are_not_function_words():
    assert is_content(" instrument") and is_content(" play?") and is_content("quartered")
    assert not any(is_content(t) for t in (" A", ":", "?", " the", " Which", " does", " 1999", "Q"))


def test_last_content_is_the_last_word_after_the_subject(tiny_model):
    adapter = ModelAdapter(tiny_model)
    pos = locate(adapter, QUESTION.prompt, QUESTION.subject)
    assert relation_position(adapter, pos, "last") == pos.last_relation
    assert relation_position(adapter, pos, "after_subject") == pos.last_subject + 1
    at = relation_position(adapter, pos, "last_content")
    assert pos.last_subject < at < pos.last_relation
    assert "play" in adapter.decode(pos.tokens[at]) + adapter.decode(pos.tokens[at + 1])
    special = set(adapter.tokenizer.all_special_ids)  # a tiny tokenizer's unknown pieces among them
    after = [adapter.decode(t) for t in pos.tokens[at + 1:] if t not in special]
    assert not any(is_content(t) for t in after)  # nothing after it is a content word
    with pytest.raises(ValueError, match="relation_position.*'first'"):
        relation_position(adapter, pos, "first")


@pytest.mark.parametrize("prompt", ["Q: What is the capital of {}? A:", "{} is a", "The weather was nice. {}"])
def test_the_words_before_the_subject_are_never_chosen(tiny_model, prompt):
    """"capital" comes before the subject, where δ₂ at the subject cannot reach: the last token."""
    adapter = ModelAdapter(tiny_model)
    pos = locate(adapter, prompt, "Miles Davis")
    assert relation_position(adapter, pos, "last_content") == pos.last_relation
    assert relation_position(adapter, pos, "after_subject") == min(pos.last_subject + 1, pos.last_relation)


def test_the_batch_reads_h_r_at_the_chosen_token_and_predicts_at_the_last(tiny_model):
    adapter = ModelAdapter(tiny_model)
    templates = (*TEMPLATES, "The weather was nice today. {}")
    last, content = (rewrite_batch(adapter, QUESTION, templates, ["{} is a"], s) for s in ("last", "last_content"))
    assert torch.equal(last.relation_at, last.last_relation) and torch.equal(last.tokens, content.tokens)
    rows = slice(0, content.n_rewrite)
    assert (content.relation_at[rows] < content.last_relation[rows]).all()
    assert (content.relation_at > content.last_subject).all()  # every row, context prefixes and KL prompt too
    assert torch.equal(content.target_cols, last.target_cols) and torch.equal(content.positions("relation"),
                                                                              content.relation_at)


@pytest.mark.parametrize("loss", ["l2", "readout"])
def test_stage_2_reaches_h_r_at_the_chosen_token(tiny_model, loss):
    """δ₂ at the last subject token moves h_r at the chosen token (it lies after the subject)."""
    adapter = ModelAdapter(tiny_model)
    batch = rewrite_batch(adapter, QUESTION, TEMPLATES, ["{} is a"], "last_content")
    v_init = torch.ones(adapter.d_model)
    targets = relation_resid(adapter, batch, 2)
    objective = relation_objective(adapter, batch, slice(0, 1), 1, 2, targets[:1], v_init, loss=loss)
    delta = torch.randn(adapter.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(objective.resid(delta), objective.resid(None))
        assert torch.allclose(objective.resid(None), targets[:1], atol=1e-5)


def test_top_edits_through_the_chosen_token(tiny_model):
    hp = FAST.replace(stage2_loss="readout", relation_position="last_content")
    edit = top.compute(tiny_model, QUESTION, hp, templates=TEMPLATES)
    last = top.compute(tiny_model, QUESTION, hp.replace(relation_position="last"), templates=TEMPLATES)
    assert edit.hparams["relation_position"] == "last_content"
    assert not torch.allclose(last.details.layers[0].h_star, edit.details.layers[0].h_star)
    with unchecked(), pytest.raises(HparamsError, match="relation_position.*'first'"):
        FAST.replace(relation_position="first")
    assert top.TopHparams.from_dict({"relation_position": "after_subject"}).relation_position == "after_subject"


def test_all_reads_h_r_at_every_token_after_the_subject(tiny_model):
    adapter = ModelAdapter(tiny_model)
    batch = rewrite_batch(adapter, QUESTION, TEMPLATES, ["{} is a"], "all")
    last = rewrite_batch(adapter, QUESTION, TEMPLATES, ["{} is a"], "last")
    rows, cols = batch.sites("relation")
    for row in range(batch.tokens.shape[0]):
        mine = cols[rows == row].tolist()
        assert mine == list(range(int(batch.last_subject[row]) + 1, int(batch.last_relation[row]) + 1))
    assert torch.equal(batch.relation_at, last.relation_at)  # one position per row: the last site
    assert torch.equal(torch.stack(last.sites("relation")), torch.stack((last.rows, last.relation_at)))
    n = batch.n_rewrite
    assert relation_resid(adapter, batch, 2).shape == (int((rows < n).sum()), adapter.d_model)


@pytest.mark.parametrize("loss", ["l2", "readout"])
def test_stage_2_with_every_token_matches_h_r_at_each(tiny_model, loss):
    adapter = ModelAdapter(tiny_model)
    batch = rewrite_batch(adapter, QUESTION, TEMPLATES, ["{} is a"], "all")
    v_init = torch.ones(adapter.d_model)
    targets = relation_resid(adapter, batch, 2)
    n_sites = len(batch.sites("relation", 1)[0])
    objective = relation_objective(adapter, batch, slice(0, 1), 1, 2, targets[:n_sites], v_init, loss=loss)
    assert n_sites > 1 and torch.equal(objective.h_star, targets[n_sites - 1])
    with torch.no_grad():
        assert torch.allclose(objective.resid(None), targets[:n_sites], atol=1e-5)
        assert float(objective(torch.zeros(adapter.d_model)).total) == pytest.approx(0.0, abs=1e-4)


def test_top_with_every_token_adds_delta_1_at_each(tiny_model):
    hp = FAST.replace(stage2_loss="readout", relation_position="all")
    edit = top.compute(tiny_model, QUESTION, hp, templates=TEMPLATES)
    last = top.compute(tiny_model, QUESTION, hp.replace(relation_position="last"), templates=TEMPLATES)
    adapter = ModelAdapter(tiny_model)
    details = edit.details.layers[0]
    batch = rewrite_batch(adapter, QUESTION, TEMPLATES, [hp.kl_prompt], "all")
    h_init = relation_resid(adapter, batch, details.la)[len(batch.sites("relation", 1)[0]) - 1]
    assert float((details.h_star - h_init).norm()) == pytest.approx(details.delta1_norm, rel=1e-3)
    assert not torch.allclose(last.details.layers[0].h_star, details.h_star)

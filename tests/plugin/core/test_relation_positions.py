"""Where h_r is read: the last token by default; "last_content" takes the last word outside the
subject that is not a function word, and TOP then adds δ₁ and reads h_r there while the target is
still predicted at the last token."""

import pytest
import torch

from toplens import EditRequest, ModelAdapter
from toplens.core.hparams import HparamsError
from toplens.core.objective import rewrite_batch
from toplens.core.positions import locate
from toplens.core.relation_positions import is_content, relation_position
from toplens.editors import top
from tests.conftest import unchecked
from tests.plugin.editors.test_top import FAST, TEMPLATES

QUESTION = EditRequest("Q: Which instrument does {} play? A:", "Miles Davis", " Paris", " trumpet")


def test_content_words_are_words_that_are_not_function_words():
    assert is_content(" instrument") and is_content(" play?") and is_content("quartered")
    assert not any(is_content(t) for t in (" A", ":", "?", " the", " Which", " does", " 1999", "Q"))


def test_last_content_is_the_last_word_outside_the_subject(tiny_model):
    adapter = ModelAdapter(tiny_model)
    pos = locate(adapter, QUESTION.prompt, QUESTION.subject)
    assert relation_position(adapter, pos, "last") == pos.last_relation
    at = relation_position(adapter, pos, "last_content")
    assert at not in pos.subject_span and at < pos.last_relation
    assert "play" in adapter.decode(pos.tokens[at]) + adapter.decode(pos.tokens[at + 1])
    special = set(adapter.tokenizer.all_special_ids)  # a tiny tokenizer's unknown pieces among them
    after = [adapter.decode(t) for t in pos.tokens[at + 1:] if t not in special]
    assert not any(is_content(t) for t in after)  # nothing after it is a content word
    bare = locate(adapter, "{} is a", "Miles Davis")  # no content word outside the subject: the last token
    assert relation_position(adapter, bare, "last_content") == bare.last_relation
    with pytest.raises(ValueError, match="relation_position.*'first'"):
        relation_position(adapter, pos, "first")


def test_the_batch_reads_h_r_at_the_chosen_token_and_predicts_at_the_last(tiny_model):
    adapter = ModelAdapter(tiny_model)
    last, content = (rewrite_batch(adapter, QUESTION, TEMPLATES, ["{} is a"], s) for s in ("last", "last_content"))
    assert torch.equal(last.relation_at, last.last_relation) and torch.equal(last.tokens, content.tokens)
    assert (content.relation_at[:2] < content.last_relation[:2]).all()
    assert torch.equal(content.target_cols, last.target_cols) and torch.equal(content.positions("relation"),
                                                                              content.relation_at)


def test_top_edits_through_the_chosen_token(tiny_model):
    hp = FAST.replace(stage2_loss="readout")
    last, content = (top.compute(tiny_model, QUESTION, hp.replace(relation_position=s), templates=TEMPLATES)
                     for s in ("last", "last_content"))
    assert content.hparams["relation_position"] == "last_content"
    assert not torch.allclose(last.details.layers[0].h_star, content.details.layers[0].h_star)
    with unchecked(), pytest.raises(HparamsError, match="relation_position.*'first'"):
        FAST.replace(relation_position="first")
    assert top.TopHparams.from_dict({"relation_position": "last_content"}).relation_position == "last_content"

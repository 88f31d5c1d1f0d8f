"""TOP's la per request: restoring the last token's clean residual after the final block
reproduces the clean run (on both backends), the chosen la is the first layer that recovers the
asked share, and TOP with rel_feat_layer="auto" edits at that la."""

import math

import pytest
import torch

from toplens import ModelAdapter
from toplens.core import auto_la
from toplens.core.auto_la import choose_la, restored_last_token, settle
from toplens.core.corruption import clean_prob, make_corruption
from toplens.core.hparams import HparamsError
from toplens.editors import top
from toplens.editors.top import TopHparams
from tests.plugin.editors.test_top import FAST, REQUEST, TEMPLATES


def test_restoring_after_the_last_block_gives_the_clean_probability(tiny_model):
    adapter = ModelAdapter(tiny_model)
    corruption = make_corruption(adapter, REQUEST.prompt, REQUEST.subject, REQUEST.target_true, n_samples=4)
    last = adapter.n_layers - 1
    restored = restored_last_token(adapter, corruption, (1, last))
    assert restored.shape == (2,)
    assert float(restored[1]) == pytest.approx(clean_prob(adapter, corruption), rel=1e-4, abs=1e-7)


def test_restoration_in_chunks_equals_one_forward(tiny_model, monkeypatch):
    adapter = ModelAdapter(tiny_model)
    corruption = make_corruption(adapter, REQUEST.prompt, REQUEST.subject, REQUEST.target_true, n_samples=4)
    layers = tuple(range(adapter.n_layers))
    whole = restored_last_token(adapter, corruption, layers)
    monkeypatch.setattr(auto_la, "MAX_ROWS", 5)  # one layer (4 rows) per forward
    assert torch.allclose(restored_last_token(adapter, corruption, layers), whole, atol=1e-6)


def test_the_fallbacks_warn_naming_the_request(tiny_model, monkeypatch, caplog):
    monkeypatch.setattr(auto_la, "clean_prob", lambda adapter, c: 0.6)
    monkeypatch.setattr(auto_la, "answer_probs", lambda adapter, c, *a, **k: torch.full((c.n_samples,), 0.1))
    monkeypatch.setattr(auto_la, "restored_last_token", lambda adapter, c, layers, *at: torch.tensor([0.12, 0.2, 0.15]))
    with caplog.at_level("WARNING", logger="toplens.core.auto_la"):
        assert choose_la(ModelAdapter(tiny_model), REQUEST, 0, n_samples=4).la == 2  # the layer recovering most
    assert REQUEST.text in caplog.text and "recovers most" in caplog.text


@pytest.mark.parametrize("fraction, la", [(0.03, 1), (0.2, 2), (0.5, 3), (0.999, 3)])
def test_la_is_the_first_layer_that_recovers_the_share(tiny_model, monkeypatch, fraction, la):
    """With P(o) clean 0.6, corrupted 0.1 and the last token restored after layers 1, 2, 3 at
    0.12, 0.3, 0.6 (shares 0.04, 0.4, 1.0), la is the first layer at or above the share."""
    monkeypatch.setattr(auto_la, "clean_prob", lambda adapter, c: 0.6)
    monkeypatch.setattr(auto_la, "answer_probs", lambda adapter, c, *a, **k: torch.full((c.n_samples,), 0.1))
    monkeypatch.setattr(auto_la, "restored_last_token", lambda adapter, c, layers, *at: torch.tensor([0.12, 0.3, 0.6]))
    choice = choose_la(ModelAdapter(tiny_model), REQUEST, 0, fraction=fraction, n_samples=4)
    assert choice.layers == (1, 2, 3) and choice.recovered == pytest.approx((0.04, 0.4, 1.0))
    assert choice.la == la and choice.answer == REQUEST.target_true


def test_without_a_measurable_gap_la_is_the_middle_layer(tiny_model, monkeypatch, caplog):
    monkeypatch.setattr(auto_la, "clean_prob", lambda adapter, c: 0.5)
    monkeypatch.setattr(auto_la, "answer_probs", lambda adapter, c, patches=(), repeats=1: torch.full((repeats * c.n_samples,), 0.49))
    with caplog.at_level("WARNING", logger="toplens.core.auto_la"):
        choice = choose_la(ModelAdapter(tiny_model), REQUEST, 0, n_samples=4)
    assert choice.la == 2 and all(math.isnan(s) for s in choice.recovered) and "middle candidate" in caplog.text
    with pytest.raises(ValueError, match="fraction"):
        choose_la(ModelAdapter(tiny_model), REQUEST, 0, fraction=0.0)


def test_top_with_auto_edits_at_the_chosen_la(tiny_model, monkeypatch):
    hp = FAST.replace(layers=(0,), rel_feat_layer="auto")
    with monkeypatch.context() as m:  # settings that cannot run together are refused before la is measured
        m.setattr(top, "settle", lambda *a: pytest.fail("la was measured for settings that cannot run"))
        with pytest.raises(HparamsError, match="stage2_keep_spare=True needs stage2_keep_weight"):
            top.compute(tiny_model, REQUEST, hp.replace(stage2_keep_spare=True), templates=TEMPLATES)
    with pytest.raises(HparamsError, match="rel_feat_layer='auto' is chosen per request"):
        top.EDITOR.stages(hp)
    settled, choice = settle(ModelAdapter(tiny_model), REQUEST, hp)
    assert settled.rel_feat_layer == choice.la and top.EDITOR.settle(tiny_model, REQUEST, hp) == settled
    assert [s.site.layer for s in top.EDITOR.stages(settled)] == [choice.la, 0]
    edit = top.compute(tiny_model, REQUEST, hp, templates=TEMPLATES)
    assert edit.details.layers[0].la == choice.la == edit.details.la_choice.la
    assert edit.details.la_choice.clean == choice.clean
    assert edit.hparams["rel_feat_layer"] == choice.la and edit.details.summary()["la_auto"] is True


def test_auto_is_the_one_named_value_rel_feat_layer_takes():
    assert TopHparams.from_dict({"rel_feat_layer": "auto"}).rel_feat_layer == "auto"
    assert TopHparams.from_dict({"rel_feat_layer": 3.0}).rel_feat_layer == 3
    for bad in ("Auto", 0, 2.5):
        with pytest.raises(HparamsError, match="rel_feat_layer"):
            TopHparams.from_dict({"rel_feat_layer": bad})
    assert TopHparams(rel_feat_layer="auto").relayered(lambda x: x, 8).rel_feat_layer == "auto"
    with pytest.raises(HparamsError, match=r"an integer or one of \['auto'\]; got 'Auto'"):
        TopHparams.from_dict({"rel_feat_layer": "Auto"})

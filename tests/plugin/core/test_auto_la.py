"""TOP's automatic la: restoring the last token's clean residual after the final block reproduces
the clean run (on both backends); the rise rule picks the layer whose share jumps most, the
fraction rule the first layer that recovers the asked share; the model's la is the rise of the
mean share over the probe facts, measured once per model; TOP with rel_feat_layer="auto" edits at
the la it settles on."""

import math
import weakref

import pytest
import torch

from toplens import ModelAdapter
from toplens.core import auto_la
from toplens.core.auto_la import choose_la, model_la, read_la, restored_last_token, settle
from toplens.core.corruption import clean_prob, make_corruption
from toplens.core.hparams import HparamsError
from toplens.editors import top
from toplens.editors.top import TopHparams
from tests.conftest import unchecked
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
    monkeypatch.setattr(auto_la, "restored_last_token", lambda adapter, c, layers, *at: torch.tensor([0.1, 0.12, 0.2, 0.15]))
    with caplog.at_level("WARNING", logger="toplens.core.auto_la"):
        assert choose_la(ModelAdapter(tiny_model), REQUEST, 0, rule="fraction", n_samples=4).la == 2  # recovers most
    assert REQUEST.text in caplog.text and "recovers most" in caplog.text


@pytest.mark.parametrize("fraction, la", [(0.03, 1), (0.2, 2), (0.5, 3), (0.999, 3)])
def test_la_is_the_first_layer_that_recovers_the_share(tiny_model, monkeypatch, fraction, la):
    """With P(o) clean 0.6, corrupted 0.1 and the last token restored after layers 1, 2, 3 at
    0.12, 0.3, 0.6 (shares 0.04, 0.4, 1.0), la is the first layer at or above the share."""
    monkeypatch.setattr(auto_la, "clean_prob", lambda adapter, c: 0.6)
    monkeypatch.setattr(auto_la, "answer_probs", lambda adapter, c, *a, **k: torch.full((c.n_samples,), 0.1))
    monkeypatch.setattr(auto_la, "restored_last_token", lambda adapter, c, layers, *at: torch.tensor([0.1, 0.12, 0.3, 0.6]))
    choice = choose_la(ModelAdapter(tiny_model), REQUEST, 0, rule="fraction", fraction=fraction, n_samples=4)
    assert choice.layers == (1, 2, 3) and choice.recovered == pytest.approx((0.04, 0.4, 1.0))
    assert choice.la == la and choice.answer == REQUEST.target_true and choice.rule == "fraction"


@pytest.mark.parametrize("share, base, la", [((0.04, 0.4, 1.0), 0.0, 3), ((0.5, 0.6, 0.7), 0.0, 1),
                                             ((0.5, 0.6, 0.9), 0.45, 3), ((0.1, 0.2, 0.9, 1.0), 0.0, 3),
                                             ((0.2, 0.1, 0.3), 0.0, 1)])
def test_the_rise_rule_picks_the_largest_jump(share, base, la):
    """The first candidate rises over ``base``, the share after the edit layer; ties go to the earlier layer."""
    assert read_la(tuple(range(1, len(share) + 1)), list(share), base=base) == la


def test_read_la_refuses_nan_or_mismatched_shares_and_unknown_rules():
    with pytest.raises(ValueError, match="one finite share per layer"):
        read_la((1, 2), [0.1, float("nan")])
    with pytest.raises(ValueError, match="one finite share per layer"):
        read_la((1, 2, 3), [0.1, 0.2])
    with pytest.raises(ValueError, match=r"rule must be one of \['rise', 'fraction'\]; got 'rises'"):
        read_la((1, 2), [0.1, 0.2], rule="rises")


def _fake_restoration(monkeypatch, restored):
    """P(o) clean 0.6, corrupted 0.1, and ``restored`` after the edit layer and each candidate."""
    monkeypatch.setattr(auto_la, "clean_prob", lambda adapter, c: 0.6)
    monkeypatch.setattr(auto_la, "answer_probs", lambda adapter, c, *a, **k: torch.full((c.n_samples,), 0.1))
    monkeypatch.setattr(auto_la, "restored_last_token", lambda adapter, c, layers, *at: torch.tensor(restored[:len(layers)]))


def test_the_rise_rule_is_the_default_and_the_rules_disagree(tiny_model, monkeypatch):
    """Shares 0.3, 0.5, 1.0 after layers 1-3 (0 after the edit layer): half the gap is first reached
    at layer 2, the largest rise is at layer 3."""
    _fake_restoration(monkeypatch, [0.1, 0.25, 0.35, 0.6])
    adapter = ModelAdapter(tiny_model)
    rise = choose_la(adapter, REQUEST, 0, n_samples=4)
    assert (rise.rule, rise.la, rise.baseline) == ("rise", 3, pytest.approx(0.0))
    assert rise.recovered == pytest.approx((0.3, 0.5, 1.0))
    assert choose_la(adapter, REQUEST, 0, rule="fraction", n_samples=4).la == 2
    with pytest.raises(ValueError, match="rule must be one of"):
        choose_la(adapter, REQUEST, 0, rule="half")


def _fake_probes(monkeypatch, curves):
    calls = []

    def fake(adapter, request, edit_layer, **kw):
        calls.append(request.text)
        layers = tuple(range(edit_layer + 1, 4))  # the tiny models have 4 layers
        share = curves[(len(calls) - 1) % len(curves)][-len(layers):]
        base = float("nan") if math.isnan(share[0]) else 0.0
        return auto_la.LaChoice(0, layers, share, 0.5, 0.1, request.target_true, "rise", base)
    monkeypatch.setattr(auto_la, "choose_la", fake)
    monkeypatch.setattr(auto_la, "_MODEL_LA", weakref.WeakKeyDictionary())
    return calls


def test_the_models_la_is_the_rise_of_the_median_share_and_is_kept_until_the_weights_change(tiny_model, monkeypatch):
    adapter = ModelAdapter(tiny_model)
    calls = _fake_probes(monkeypatch, [(0.1, 0.2, 1.0), (0.0, 0.7, 0.8), (0.1, 0.2, 0.9), (float("nan"),) * 3])
    first = model_la(adapter, 0)
    assert len(calls) == len(auto_la.PROBE_FACTS) and model_la(adapter, 0) is first
    assert first.la == 3 and first.recovered[2] == pytest.approx(0.9)  # medians 0.1, 0.2, 0.9
    assert len(first.probes) == len(auto_la.PROBE_FACTS)
    model_la(adapter, 1)  # another edit layer is another measurement
    assert len(calls) == 2 * len(auto_la.PROBE_FACTS)
    with torch.no_grad():
        adapter.w_out(0).mul_(1.0)  # an in-place change of the weights: measured again
    model_la(adapter, 0)
    assert len(calls) == 3 * len(auto_la.PROBE_FACTS)


def test_without_a_measurable_probe_the_models_la_is_the_middle_candidate(tiny_model, monkeypatch, caplog):
    _fake_probes(monkeypatch, [(float("nan"),) * 3])
    with caplog.at_level("WARNING", logger="toplens.core.auto_la"):
        choice = model_la(ModelAdapter(tiny_model), 0)
    assert choice.la == 2 and "no probe fact moves" in caplog.text


def test_without_a_measurable_gap_la_is_the_middle_layer(tiny_model, monkeypatch, caplog):
    monkeypatch.setattr(auto_la, "clean_prob", lambda adapter, c: 0.5)
    monkeypatch.setattr(auto_la, "answer_probs", lambda adapter, c, patches=(), repeats=1: torch.full((repeats * c.n_samples,), 0.49))
    with caplog.at_level("WARNING", logger="toplens.core.auto_la"):
        choice = choose_la(ModelAdapter(tiny_model), REQUEST, 0, n_samples=4)
    assert choice.la == 2 and all(math.isnan(s) for s in choice.recovered) and "middle candidate" in caplog.text
    with pytest.raises(ValueError, match="fraction"):
        choose_la(ModelAdapter(tiny_model), REQUEST, 0, fraction=0.0)


def test_a_request_without_a_gap_falls_back_to_the_models_la(tiny_model, monkeypatch, caplog):
    monkeypatch.setattr(auto_la, "clean_prob", lambda adapter, c: 0.5)
    monkeypatch.setattr(auto_la, "answer_probs", lambda adapter, c, patches=(), repeats=1: torch.full((repeats * c.n_samples,), 0.49))
    with caplog.at_level("WARNING", logger="toplens.core.auto_la"):
        choice = choose_la(ModelAdapter(tiny_model), REQUEST, 0, n_samples=4, fallback=lambda: 3)
    assert choice.la == 3 and "the model's la" in caplog.text


def test_settle_per_request_measures_the_probes_only_without_a_signal(tiny_model, monkeypatch):
    hp = FAST.replace(layers=(0,), rel_feat_layer="auto", auto_la="request")
    monkeypatch.setattr(auto_la, "model_la", lambda *a: pytest.fail("the probes were measured for a request with a signal"))
    _fake_restoration(monkeypatch, [0.1, 0.25, 0.35, 0.6])
    settled, choice = settle(ModelAdapter(tiny_model), REQUEST, hp)
    assert choice.la == 3 and settled.rel_feat_layer == 3
    monkeypatch.setattr(auto_la, "answer_probs", lambda adapter, c, patches=(), repeats=1: torch.full((repeats * c.n_samples,), 0.59))
    monkeypatch.setattr(auto_la, "model_la", lambda *a: auto_la.ModelLa(1, (1, 2, 3), (0.0,) * 3, ()))
    settled, choice = settle(ModelAdapter(tiny_model), REQUEST, hp)
    assert choice.la == 1 and settled.rel_feat_layer == 1


@pytest.mark.parametrize("where", ["model", "request"])
def test_top_with_auto_edits_at_the_chosen_la(tiny_model, monkeypatch, where):
    monkeypatch.setattr(auto_la, "_MODEL_LA", weakref.WeakKeyDictionary())  # no cache left for other tests
    hp = FAST.replace(layers=(0,), rel_feat_layer="auto", auto_la=where)
    with monkeypatch.context() as m:  # settings that cannot run together are refused before la is measured
        m.setattr(top, "settle", lambda *a: pytest.fail("la was measured for settings that cannot run"))
        with pytest.raises(HparamsError, match="stage2_keep_spare=True needs stage2_keep_weight"):
            top.compute(tiny_model, REQUEST, hp.replace(stage2_keep_spare=True), templates=TEMPLATES)
    with pytest.raises(HparamsError, match="rel_feat_layer='auto' is measured on the model"):
        top.EDITOR.stages(hp)
    settled, choice = settle(ModelAdapter(tiny_model), REQUEST, hp)
    assert settled.rel_feat_layer == choice.la and top.EDITOR.settle(tiny_model, REQUEST, hp) == settled
    assert [s.site.layer for s in top.EDITOR.stages(settled)] == [choice.la, 0]
    edit = top.compute(tiny_model, REQUEST, hp, templates=TEMPLATES)
    assert edit.details.layers[0].la == choice.la == edit.details.la_choice.la
    assert edit.details.la_choice.layers == choice.layers and type(choice).__name__ == ("ModelLa" if where == "model" else "LaChoice")
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
    with unchecked(), pytest.raises(HparamsError, match=r"TopHparams.auto_la must be one of \['model', 'request'\]; got 'layer'"):
        TopHparams.from_dict({"auto_la": "layer"})

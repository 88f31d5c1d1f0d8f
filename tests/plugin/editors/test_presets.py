import pytest

from toplens.editors import MemitHparams, RetsHparams, RomeHparams
from toplens.editors.top import TopHparams
from toplens.editors.presets import fast_path, get_preset, methods, model_key, short_path

MODELS = {"gpt2-xl": "gpt2-xl", "EleutherAI/gpt-j-6b": "gpt-j-6b", "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b",
          "smollm2-135m": "smollm2-135m"}
CLASSES = {"rome": RomeHparams, "top": TopHparams, "rets": RetsHparams, "memit": MemitHparams}
# The values docs/presets.md publishes for each method and model (the optimizer settings shared by
# all of them, lr 0.5 and KL weight 0.0625, are checked once below).
PUBLISHED = {
    ("rome", "gpt2-xl"): dict(layer=17, v_num_grad_steps=25, v_weight_decay=0.5, clamp_norm_factor=4.0,
                              mom2_adjustment=True),
    ("rome", "gpt-j-6b"): dict(layer=5, v_num_grad_steps=20, clamp_norm_factor=4.0, mom2_adjustment=True),
    ("rome", "qwen2.5-7b"): dict(layer=5, v_num_grad_steps=20, mom2_adjustment=False),
    ("rome", "smollm2-135m"): dict(layer=5, v_num_grad_steps=20, mom2_adjustment=False,
                                   context_lengths=((2, 5),)),  # the fast path's rows
    ("top", "gpt2-xl"): dict(layers=(17, 18), rel_feat_layer=1, v_num_grad_steps1=25, v_num_grad_steps2=25,
                             vec_loss_factor=0.1, mom2_adjustment=True, stage2="faithful"),
    ("top", "gpt-j-6b"): dict(layers=(5,), rel_feat_layer=5, v_num_grad_steps1=20, v_num_grad_steps2=20,
                              vec_loss_factor=0.06, mom2_adjustment=True, stage2="faithful"),
    ("top", "qwen2.5-7b"): dict(layers=(5,), rel_feat_layer=5, v_num_grad_steps1=20, v_num_grad_steps2=20,
                                vec_loss_factor=0.1, mom2_adjustment=False, stage2="faithful"),
    ("top", "smollm2-135m"): dict(layers=(8,), rel_feat_layer=15, v_num_grad_steps1=20, v_num_grad_steps2=40,
                                  stage2_loss="readout", stage2_site="fold", mom2_adjustment=True, key="sink",
                                  stage2_reset="none", stage2_keep_weight=3.0, stage2_keep_spare=True),
    ("rets", "gpt2-xl"): dict(layer=35, v_num_grad_steps=20, mom2_adjustment=True, constraint_weight=1.0),
    ("rets", "gpt-j-6b"): dict(layer=17, mom2_adjustment=True),
    ("rets", "qwen2.5-7b"): dict(layer=19, mom2_adjustment=False),
    ("rets", "smollm2-135m"): dict(layer=20, v_num_grad_steps=20, mom2_adjustment=False),
    ("memit", "gpt2-xl"): dict(layers=(13, 14, 15, 16, 17), v_num_grad_steps=20, clamp_norm_factor=0.75,
                               mom2_update_weight=20000.0, mom2_adjustment=True),
    ("memit", "gpt-j-6b"): dict(layers=(3, 4, 5, 6, 7, 8), v_num_grad_steps=25, clamp_norm_factor=0.75,
                                mom2_update_weight=15000.0, mom2_adjustment=True),
    ("memit", "qwen2.5-7b"): dict(layers=(4, 5, 6, 7, 8), v_num_grad_steps=25, v_weight_decay=1e-3,
                                  clamp_norm_factor=4.0, mom2_update_weight=15000.0, mom2_adjustment=True),
    ("memit", "smollm2-135m"): dict(layers=(3, 4, 5, 6, 7), v_num_grad_steps=20, mom2_update_weight=1.0,
                                    mom2_adjustment=False),
}


@pytest.mark.parametrize("method", ["rome", "top", "rets", "memit"])
@pytest.mark.parametrize("model", list(MODELS))
def test_every_method_has_the_published_preset_for_every_published_model(method, model):
    assert model_key(model) == MODELS[model]
    hp = get_preset(method, model)
    assert type(hp) is CLASSES[method]
    expected = PUBLISHED[method, MODELS[model]]
    assert {name: getattr(hp, name) for name in expected} == expected
    short = (method, MODELS[model]) == ("rome", "smollm2-135m")  # the bundled ROME: Adam's step doubled
    assert (hp.v_lr, hp.kl_factor) == (1.0 if short else 0.5, 0.0625)
    assert type(hp).from_json(hp.to_json()) == hp


def test_smollm_top_preset_and_the_faithful_one_beside_it():
    ours, faithful = get_preset("top", "smollm2-135m"), get_preset("top", "smollm2-135m-faithful")
    assert isinstance(ours, TopHparams) and isinstance(faithful, TopHparams)
    assert (ours.stage2_loss, ours.stage2_site, ours.layers, ours.rel_feat_layer) == ("readout", "fold", (8,), 15)
    layer5 = get_preset("top", "smollm2-135m-l5")  # the twelfth session's preset: la = 23 from layer 5
    assert (layer5.layers, layer5.rel_feat_layer, layer5.stage2_keep_weight, layer5.mom2_adjustment) == ((5,), 18, 0.0,
                                                                                                         False)
    assert ours == layer5.replace(layers=(8,), rel_feat_layer=15, mom2_adjustment=True, stage2_reset="none",
                                  stage2_keep_weight=3.0, stage2_keep_spare=True)
    assert (faithful.stage2_loss, faithful.stage2_site, faithful.rel_feat_layer) == ("l2", "subject", 5)
    published = get_preset("top", "qwen2.5-7b")
    assert faithful.replace(v_num_grad_steps2=published.v_num_grad_steps2,
                            context_lengths=published.context_lengths) == published
    assert get_preset("top", None) == ours  # no name: the bundled model's preset
    assert get_preset("top", "smollm2-135m-specific") == layer5.replace(stage2_keep_weight=5.0)


@pytest.mark.parametrize("method", ["rome", "top", "rets", "memit"])
def test_the_bundled_models_presets_are_the_reference_ones_on_the_fast_path(method):
    reference = get_preset(method, "smollm2-135m-reference")
    assert (reference.precision, reference.stop_rule, reference.context_lengths) == ("float32", "total",
                                                                                     ((5, 5), (5, 10)))
    path = short_path if method == "rome" else fast_path  # ROME's preset also takes the shorter optimization
    for name in (None, "smollm2", "smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert get_preset(method, name) == path(reference) != reference
    if method != "top":  # TOP's variant names give the other methods their own fast preset
        assert get_preset(method, "smollm2-135m-specific") == get_preset(method, "smollm2-135m-l5") == path(reference)
    published = get_preset(method, "gpt2-xl")  # published presets stay as published
    assert published.precision == "float32" and published == get_preset(method, "gpt2-xl", n_layers=48)
    unknown = get_preset(method, "some/other-model", n_layers=30)  # on the reference path; TOP: the layer-5 one
    base = reference if method != "top" else get_preset("top", "smollm2-135m-l5")
    assert unknown == base.replace(precision="float32", stop_rule="total", context_lengths=((5, 5), (5, 10)))


def test_the_short_path_is_the_fast_path_with_a_doubled_step_and_a_looser_fit_stop():
    rome, top, rets = (get_preset(m, "smollm2-135m-reference") for m in ("rome", "top", "rets"))
    assert short_path(rome) == fast_path(rome).replace(v_lr=1.0, early_stop_loss=0.2, precision="float32")
    assert short_path(top) == fast_path(top).replace(v_lr=1.0, v_lr2=1.0, early_stop1=0.1, early_stop2=0.2)
    assert short_path(rets) == fast_path(rets)  # not measured for RETS: its fast path as it is
    assert get_preset("top", None) == fast_path(get_preset("top", "smollm2-135m-reference"))  # TOP's default stays
    for method in ("rome", "top", "rets", "memit"):  # "-fast": every preset on the fast path, ROME's too
        assert get_preset(method, "smollm2-135m-fast") == fast_path(get_preset(method, "smollm2-135m-reference"))


def test_the_faithful_top_stays_on_the_reference_path_and_the_specific_one_is_fast():
    faithful, specific = get_preset("top", "smollm2-135m-faithful"), get_preset("top", "smollm2-135m-specific")
    assert (faithful.precision, faithful.stop_rule) == ("float32", "total")
    assert specific == get_preset("top", "smollm2-135m-l5").replace(stage2_keep_weight=5.0)
    assert specific.precision == "auto" and specific.context_lengths == ((2, 5),)
    layer5 = get_preset("top", "smollm2-135m-l5")
    assert (layer5.precision, layer5.stop_rule, layer5.context_lengths) == ("auto", "fit", ((2, 5),))


def test_unknown_model_gets_the_bundled_preset_at_the_same_relative_depth():
    hp = get_preset("top", "some/other-model", n_layers=6)
    assert hp.layers == (1,) and hp.layers[0] + hp.rel_feat_layer < 6
    assert get_preset("rome", "some/other-model", n_layers=60).layer == 10
    with pytest.raises(ValueError, match=r"method must be one of \['memit', 'rets', 'rome', 'top'\]; got 'nope'"):
        get_preset("nope", None)
    assert set(methods()) >= {"rome", "top", "rets", "memit"}


def test_preset_or_given_checks_the_class_of_what_is_given():
    from toplens.editors.rome import RomeHparams
    from toplens.editors.presets import preset_or_given

    assert preset_or_given("top", None, "smollm2-135m", 30) == get_preset("top", "smollm2-135m", 30)
    given = RomeHparams(layer=3)
    assert preset_or_given("rome", given, None, 30) is given
    with pytest.raises(ValueError, match="TopHparams for method 'top'"):
        preset_or_given("top", given, None, 30)
    assert preset_or_given("an-editor-without-presets", given, None, 30) is given
    with pytest.raises(ValueError, match="method"):
        preset_or_given("an-editor-without-presets", None, None, 30)

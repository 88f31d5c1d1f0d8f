import pytest

from toplens.editors.top import TopHparams
from toplens.editors.presets import get_preset, methods, model_key


@pytest.mark.parametrize("method", ["rome", "top", "rets", "memit"])
@pytest.mark.parametrize("model", ["gpt2-xl", "EleutherAI/gpt-j-6b", "Qwen/Qwen2.5-7B-Instruct", "smollm2-135m"])
def test_every_method_has_a_preset_for_every_published_model(method, model):
    assert model_key(model) is not None
    hp = get_preset(method, model)
    assert hp.to_dict()  # a dataclass that serializes


def test_smollm_top_preset_and_the_faithful_one_beside_it():
    ours, faithful = get_preset("top", "smollm2-135m"), get_preset("top", "smollm2-135m-faithful")
    assert isinstance(ours, TopHparams) and isinstance(faithful, TopHparams)
    assert (ours.stage2_loss, ours.stage2_site, ours.layers, ours.rel_feat_layer) == ("readout", "fold", (5,), 10)
    assert (faithful.stage2_loss, faithful.stage2_site, faithful.rel_feat_layer) == ("l2", "subject", 5)
    published = get_preset("top", "qwen2.5-7b")
    assert faithful.replace(v_num_grad_steps2=published.v_num_grad_steps2,
                            context_lengths=published.context_lengths) == published
    assert get_preset("top", None) == ours  # no name: the bundled model's preset


def test_unknown_model_gets_the_bundled_preset_at_the_same_relative_depth():
    hp = get_preset("top", "some/other-model", n_layers=6)
    assert hp.layers == (1,) and hp.layers[0] + hp.rel_feat_layer < 6
    assert get_preset("rome", "some/other-model", n_layers=60).layer == 10
    with pytest.raises(ValueError, match="method"):
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

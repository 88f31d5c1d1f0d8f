import math

import pytest

from tests.conftest import param_hash

from toplens.analyses.tracing.independence import independence_check
from toplens import EditRequest
from toplens.editors import top
from toplens.editors.rome import RomeHparams
from toplens.editors.top import TopHparams

REQUEST = EditRequest("{} plays the", "Miles Davis", " Paris", " trumpet")
# With the subject last, h_r (last token, layer la > l) lies downstream of v and nothing else does:
# fixing h_r must make P(o*) exactly independent of v.
SUBJECT_LAST = EditRequest("Miles Davis plays the {}", "trumpet", " Paris", " France")
TOP = TopHparams(layers=(1,), rel_feat_layer=1, v_num_grad_steps1=6, v_num_grad_steps2=6, mom2_adjustment=False)
ROME = RomeHparams(layer=1, v_num_grad_steps=6, mom2_adjustment=False)
TEMPLATES = ("{}", "Paris is the capital of France. {}")


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
def test_rows_are_finite_and_the_model_is_unchanged(request, name):
    model = request.getfixturevalue(name)
    weights = param_hash(model)
    result = independence_check(model, REQUEST, TOP, rome_hparams=ROME, n_random=3, templates=TEMPLATES)
    assert param_hash(model) == weights
    assert [r.name for r in result.rows] == ["v_init", "top_v_star", "rome_v_star", "random_0", "random_1",
                                            "random_2"]
    assert (result.layer, result.la) == (1, 2)
    for row in result.rows:
        assert all(math.isfinite(x) for x in (row.p_fixed, row.p_free, row.v_norm, row.delta_norm))
        assert 0 <= row.p_fixed <= 1 and 0 <= row.p_free <= 1
    radius = max(result.rows[1].delta_norm, result.rows[2].delta_norm)
    assert all(r.delta_norm == pytest.approx(radius, rel=1e-4) for r in result.rows[3:])
    assert result.rows[0].delta_norm == 0
    spread = result.spread()
    assert spread["max_minus_min"] >= spread["std"] >= 0
    assert set(result.to_json()) >= {"rows", "fixed", "free", "p_h_star"}


def test_fixed_relation_feature_screens_off_a_subject_at_the_last_token(tiny_hooked):
    result = independence_check(tiny_hooked, SUBJECT_LAST, TOP, include_rome=False, n_random=3, templates=("{}",))
    assert result.spread("p_fixed")["max_minus_min"] < 1e-6
    assert result.spread("p_free")["max_minus_min"] > 1e-4
    assert all(r.p_fixed == pytest.approx(result.p_h_star, abs=1e-6) for r in result.rows)


def test_a_given_top_edit_is_reused(tiny_hooked):
    edit = top.compute(tiny_hooked, REQUEST, TOP, templates=TEMPLATES)
    result = independence_check(tiny_hooked, REQUEST, top_edit=edit, include_rome=False, n_random=0)
    info = edit.details.layers[0]
    assert [r.name for r in result.rows] == ["v_init", "top_v_star"]
    assert result.rows[1].v_norm == pytest.approx(float(info.v_star.norm()))
    with pytest.raises(ValueError, match="n_random"):
        independence_check(tiny_hooked, REQUEST, top_edit=edit, n_random=-1)

import math

import pytest
import torch

from tests.conftest import param_hash

from toplens.analyses.tracing.rie import RieRow, log_ratio, relative_indirect_effects, request_rie
from toplens import EditRequest
from toplens.editors.rome import RomeHparams
from toplens.editors.top import TopHparams

REQUESTS = [EditRequest("Miles Davis plays the {}", "trumpet", " Paris", " France"),
            EditRequest("{} plays the", "Miles Davis", " Paris", " trumpet")]
HPARAMS = {"rome": RomeHparams(layer=1, v_num_grad_steps=5, mom2_adjustment=False),
           "top": TopHparams(layers=(1,), rel_feat_layer=1, v_num_grad_steps1=5, v_num_grad_steps2=5,
                             mom2_adjustment=False)}
TEMPLATES = ("{}", "Paris is the capital of France. {}")


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge_llama"])
def test_rie_is_finite_and_the_model_is_restored_bit_exactly(request, name):
    model = request.getfixturevalue(name)
    weights = param_hash(model)
    report = relative_indirect_effects(model, REQUESTS, ("rome", "top"), HPARAMS, n_samples=3, window=2,
                                       templates=TEMPLATES)
    assert param_hash(model) == weights
    assert [r.method for r in report.rows] == ["rome", "top"] and all(isinstance(r, RieRow) for r in report.rows)
    assert all(r.n == 2 and math.isfinite(r.subject) and math.isfinite(r.relation) for r in report.rows)
    assert len(report.details) == 4
    detail = report.details[0]
    assert detail.ie_original.shape == (4, 2) and detail.ie_edited.shape == (4, 2)
    # the original traces are shared by the methods; the edited ones differ
    assert torch.equal(report.details[0].ie_original, report.details[1].ie_original)
    assert not torch.equal(report.details[0].ie_edited, report.details[1].ie_edited)
    assert report.per_layer("top").shape == (4, 2)
    data = report.to_json()
    assert data["n_clamped"] == report.n_clamped and len(data["details"]) == 4
    assert "rome" in report.table() and "relation" in report.table()


def test_rows_are_means_of_peak_log_ratios():
    original = torch.tensor([[0.1, 0.02], [0.3, 0.01], [0.2, 0.04]])
    edited = torch.tensor([[0.5, 0.08], [0.6, -0.2], [0.1, 0.0]])
    rie = request_rie(REQUESTS[0], "rome", original, edited, epsilon=1e-4)
    assert rie.subject == pytest.approx(math.log(0.6 / 0.3))
    assert rie.relation == pytest.approx(math.log(0.08 / 0.04))
    assert rie.clamped == 0 and rie.clamped_per_layer == 2
    assert float(rie.per_layer[1, 1]) == pytest.approx(math.log(1e-4 / 0.01))


def test_non_positive_effects_are_clamped_and_counted():
    ratio, clamped = log_ratio(torch.tensor([-0.5, 0.2]), torch.tensor([0.1, 0.0]), epsilon=1e-3)
    assert clamped == 2
    assert ratio.tolist() == pytest.approx([math.log(1e-3 / 0.1), math.log(0.2 / 1e-3)])


def test_bad_inputs_name_the_field(tiny_hooked):
    with pytest.raises(ValueError, match="target_true"):
        relative_indirect_effects(tiny_hooked, [EditRequest("{} plays the", "Miles Davis", " Paris")], ("rome",),
                                  {"rome": HPARAMS["rome"]})
    with pytest.raises(ValueError, match="method"):
        relative_indirect_effects(tiny_hooked, REQUESTS, ("roam",))
    with pytest.raises(ValueError, match="hparams"):
        relative_indirect_effects(tiny_hooked, REQUESTS, ("rome",), HPARAMS)
    with pytest.raises(ValueError, match="requests"):
        relative_indirect_effects(tiny_hooked, [], ("rome",))

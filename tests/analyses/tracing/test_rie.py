import math

import numpy as np
import pytest
import torch

from tests.conftest import param_hash

from toplens.analyses.evaluation.intervals import Bounds
from toplens.analyses.tracing.rie import (RequestRie, RieReport, RieRow, TraceSettings, log_ratio,
                                          relative_indirect_effects, request_rie, summarize)
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
    for row in report.rows:  # the means over the two requests, inside their bootstrap intervals
        mine = [d for d in report.details if d.method == row.method]
        assert row.subject == pytest.approx(np.mean([d.subject for d in mine]))
        assert row.subject_ci.low <= row.subject <= row.subject_ci.high
        assert row.relation_ci.low <= row.relation <= row.relation_ci.high
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


def _detail(method: str, subject: float, relation: float) -> RequestRie:
    zeros = torch.zeros(4, 2)
    return RequestRie(REQUESTS[0], method, zeros, zeros, subject, relation, zeros, 0, 0)


SUBJECTS = [0.3, 1.9, -0.4, 2.5, 0.8, 1.1, 3.0]
DETAILS = [_detail("rome", s, 0.75) for s in SUBJECTS] + [_detail("top", 0.5, 0.125)]


def test_rows_have_bootstrap_intervals_over_requests():
    rome, top, none = summarize(DETAILS, ("rome", "top", "rets"))
    assert rome.subject == pytest.approx(np.mean(SUBJECTS), abs=1e-12) and rome.n == 7
    assert rome.subject_ci.low < rome.subject < rome.subject_ci.high
    assert rome.subject_ci.low >= min(SUBJECTS) and rome.subject_ci.high <= max(SUBJECTS)
    assert rome.relation_ci == Bounds(0.75, 0.75) and rome.relation == 0.75  # one value: no spread
    assert top.subject_ci == Bounds(0.5, 0.5) and top.n == 1
    assert none.n == 0 and math.isnan(none.subject) and none.subject_ci is None and none.relation_ci is None


def test_report_json_and_table_show_the_intervals():
    report = RieReport(summarize(DETAILS, ("rome", "top")), DETAILS, 1e-4, TraceSettings(), 0.1)
    rome = report.to_json()["rows"][0]
    assert rome["subject_ci"] == [report.rows[0].subject_ci.low, report.rows[0].subject_ci.high]
    assert rome["relation_ci"] == [0.75, 0.75] and "bootstrap" in report.to_json()["intervals"]
    ci = report.rows[0].subject_ci
    table = report.table().splitlines()
    assert table[1].split() == ["rome", "7", f"{rome['subject']:.2f}", f"[{ci.low:.2f},", f"{ci.high:.2f}]",
                                "0.75", "[0.75,", "0.75]"]
    assert table[2].split()[2:] == ["0.50", "[0.50,", "0.50]", "0.12", "[0.12,", "0.12]"]

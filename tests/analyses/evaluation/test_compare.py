"""Methods side by side on one record: the same starting weights for each, every weight restored,
and one row per rewrite prompt, paraphrase and other relation with each method's reading."""

import math

import pytest

from toplens.analyses.cli import main
from toplens.analyses.cli.compare import format_comparison, to_json
from toplens.analyses.evaluation.compare import compare_methods
from toplens.analyses.evaluation.evaluate import evaluate_case
from tests.analyses.evaluation.test_evaluate import FAST, ShiftHparams, _record, shift  # noqa: F401 (fixture)


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
def test_each_method_edits_the_same_weights_and_every_weight_is_restored(request, name, shift):
    model, record = request.getfixturevalue(name), _record()
    c = compare_methods(model, record, {"rome": FAST, "shift": ShiftHparams()})
    assert c.restored and c.methods == ("rome", "shift")
    kinds = [r.kind for r in c.rows]
    assert kinds.count("rewrite") == 1 and kinds.count("paraphrase") == 2
    assert kinds.count("other relation") == len(c.evaluations[0].result.r_specificity.outcomes)
    alone = evaluate_case(model, record, "rome", FAST, generation_tokens=0)  # rome from the same weights
    rewrite = c.rows[0]
    assert rewrite.after["rome"] == pytest.approx(math.exp(-alone.result.efficacy.outcomes[0].nll_wanted), rel=1e-4)
    assert rewrite.after["rome"] > rewrite.before  # the edit took
    for r in c.rows:
        if r.kind == "other relation":
            assert r.leaked["rome"] == (r.new_after["rome"] >= r.after["rome"])  # o* not below the answer
    text = format_comparison(c)
    assert "ROME vs SHIFT" in text and "restored bit for bit after every revert: True" in text
    assert to_json(c)["rows"][0]["kind"] == "rewrite"


def test_an_unknown_case_is_refused_before_the_model_loads(capsys):
    assert main(["compare", "--case", "no-such-case"]) == 2
    assert "--case 'no-such-case'" in capsys.readouterr().err

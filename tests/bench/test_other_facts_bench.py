import math

import pytest

from bench.other_facts import fact_summary, method_totals


def _outcome(prompt, wanted, rival, p_wanted, p_rival):
    return {"prompt": prompt, "wanted": wanted, "rival": rival, "nll_wanted": -math.log(p_wanted),
            "nll_rival": -math.log(p_rival), "success": p_wanted > p_rival}


def _case(case_id, p_new, others_before, others_after):
    """A case line with one rewrite prompt and one relation-specific prompt per other fact."""
    def side(others, efficacy):
        return {"efficacy": {"outcomes": [efficacy]},
                "r_specificity": {"outcomes": [_outcome(f"fact {i}", " x", " English", p, q)
                                               for i, (p, q) in enumerate(others)]}}
    return {"case_id": case_id, "method": "rome",
            "pre": side(others_before, _outcome("p", " English", " French", 0.01, 0.5)),
            "post": side(others_after, _outcome("p", " English", " French", p_new, 0.05))}


def test_fact_summary_and_totals_count_kept_facts_and_leaked_probability():
    a = _case(0, 0.9, [(0.6, 0.01), (0.5, 0.02)], [(0.5, 0.1), (0.1, 0.4)])
    b = _case(1, 0.02, [(0.8, 0.01)], [(0.7, 0.01)])
    fa, fb = fact_summary(a), fact_summary(b)
    assert fa["edit_took"] and not fb["edit_took"]
    assert fa["p_new"] == pytest.approx(0.9) and fa["n_other"] == 2 and fa["kept"] == 1
    assert fa["mean_p_before"] == pytest.approx(0.55) and fa["mean_p_after"] == pytest.approx(0.3)
    assert fa["mean_p_new_after"] == pytest.approx(0.25)
    totals = method_totals([fa, fb])
    assert totals["n_facts"] == 2 and totals["edits_took"] == 1
    assert totals["n_other"] == 3 and totals["kept"] == 2
    assert totals["mean_abs_change"] == pytest.approx((0.1 + 0.4 + 0.1) / 3)
    assert totals["mean_p_new_after"] == pytest.approx((0.1 + 0.4 + 0.01) / 3)

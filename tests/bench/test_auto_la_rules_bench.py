import math

import torch

from bench import auto_la_rules
from toplens import ModelAdapter
from toplens.analyses.evaluation.records import Record
from toplens.core import auto_la
from tests.plugin.editors.test_top import REQUEST


def test_each_case_gets_both_rules_and_cases_without_a_signal_get_none(tiny_model, monkeypatch):
    """Shares 0.25, 0.5, 1.0 after layers 1-3: the rise rule says 3, half the gap 2; a case whose
    corruption does not move P(o) has no la under either rule."""
    gaps = iter([0.0, 0.49])  # P(o) corrupted: a gap for the first case, none for the second
    low = {}

    def corrupted(adapter, c, *a, **k):
        if not a and not k:
            low["p"] = next(gaps)
        return torch.full((c.n_samples,), low["p"])
    monkeypatch.setattr(auto_la, "clean_prob", lambda adapter, c: 0.5)
    monkeypatch.setattr(auto_la, "answer_probs", corrupted)
    monkeypatch.setattr(auto_la, "restored_last_token", lambda adapter, c, layers, *at: torch.tensor([0.0, 0.125, 0.25, 0.5]))
    records = [Record(1, REQUEST, paraphrase_prompts=(), neighborhood_prompts=()),
               Record(2, REQUEST, paraphrase_prompts=(), neighborhood_prompts=())]
    rows = auto_la_rules.case_rows(ModelAdapter(tiny_model), records, 0)
    assert (rows[0]["rise"], rows[0]["half"]) == (3, 2) and rows[0]["baseline"] == 0.0
    assert (rows[1]["rise"], rows[1]["half"]) == (None, None) and math.isnan(rows[1]["baseline"])
    assert auto_la_rules.counts(rows, "rise") == [(3, 1), (None, 1)]

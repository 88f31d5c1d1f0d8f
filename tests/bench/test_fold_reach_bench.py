import pytest

from bench.fold_reach import KINDS, FoldSetting, markdown, median_interval, reach
from toplens import ModelAdapter
from toplens.analyses.evaluation.records import Record
from tests.plugin.editors.test_top import REQUEST


def test_the_edits_own_wording_receives_the_whole_write(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    filled = REQUEST.prompt.replace("{}", REQUEST.subject)
    record = Record(0, REQUEST, paraphrase_prompts=(filled, f"Of all things, {filled}"),
                    neighborhood_prompts=("The Louvre is in", "Rome is a"))
    out = reach(adapter, record, FoldSetting("t", 1, False), ("{}",))
    assert out[KINDS[0]] == [pytest.approx(1.0, abs=1e-4)]  # k* · û = 1: the key the fold solves for
    assert len(out[KINDS[1]]) == 1 and out[KINDS[1]][0] != pytest.approx(1.0, abs=1e-4)
    assert len(out[KINDS[2]]) == 2 and all(v >= 0 for v in out[KINDS[2]])


def test_the_median_pools_the_prompts_and_resamples_cases():
    row = median_interval([[1.0, 3.0], [2.0], []])
    assert row["median"] == pytest.approx(2.0) and row["prompts"] == 3
    assert 1.0 <= row["low"] <= row["median"] <= row["high"] <= 3.0
    assert median_interval([[], []])["prompts"] == 0
    text = markdown([{"fold": "f", **{k: median_interval([[0.5]]) for k in KINDS}}], 1, "builtin")
    assert "| f | 0.50 [0.50, 0.50] (1) |" in text

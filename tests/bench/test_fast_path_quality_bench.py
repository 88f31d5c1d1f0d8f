import json

import pytest

from bench.fast_path_quality import FAST, REFERENCE, compare, markdown
from toplens.editors.presets import FAST_CONTEXT


def _write(folder, method, rows):
    folder.mkdir()
    lines = [json.dumps({"method": method, "case_id": cid, "seconds": 1.0,
                         "post": {m: {"rate": r} for m, r in zip(
                             ("efficacy", "generalization", "s_specificity", "r_specificity"), rates)}})
             for cid, rates in rows]
    (folder / "cases.jsonl").write_text("\n".join(lines) + "\n")


def test_compare_pairs_cases_skips_undefined_rates_and_brackets_the_difference(tmp_path):
    _write(tmp_path / "ref3", "rome", [(0, [1, 1, 1, 1]), (1, [0, 0.5, 1, None]), (2, [1, 0, 1, 1])])
    _write(tmp_path / "fast3", "rome", [(0, [1, 1, 1, 1]), (1, [1, 0.5, 1, 0.5]), (9, [0, 0, 0, 0])])
    r = compare(tmp_path, 3, "rome")
    assert r["n"] == 2  # cases 0 and 1: the ones both paths hold
    assert r["reference"][:4] == pytest.approx([50.0, 75.0, 100.0, 100.0])  # None left out of R-Spec
    assert r["fast"][:4] == pytest.approx([100.0, 75.0, 100.0, 75.0])
    low, high = r["diff_low"][0], r["diff_high"][0]
    assert low <= 50.0 <= high and low >= 0.0
    assert r["n_all"] == {"reference": 3, "fast": 3}
    assert "Incomplete" in markdown([r], 3)


def test_the_fast_settings_are_the_fast_paths_and_the_reference_ones_the_reference_paths():
    assert FAST == {"precision": "auto", "stop_rule": "fit", "context_lengths": [list(x) for x in FAST_CONTEXT]}
    assert REFERENCE == {"precision": "float32", "stop_rule": "total", "context_lengths": [[5, 5], [5, 10]]}

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
    r = compare(tmp_path, 3, "rome")  # no short3 folder: that path drops out
    assert r["n"] == 2 and r["paths"] == ["reference", "fast"]  # cases 0 and 1: the ones both paths hold
    assert r["reference"][:4] == pytest.approx([50.0, 75.0, 100.0, 100.0])  # None left out of R-Spec
    assert r["fast"][:4] == pytest.approx([100.0, 75.0, 100.0, 75.0])
    low, high = r["diff_low"]["fast"][0], r["diff_high"]["fast"][0]
    assert low <= 50.0 <= high and low >= 0.0
    assert r["n_all"] == {"reference": 3, "fast": 3}
    assert "Incomplete" in markdown([r], 3)
    _write(tmp_path / "short3", "rome", [(0, [0, 1, 1, 1]), (1, [0, 0.5, 1, 1])])
    r = compare(tmp_path, 3, "rome")
    assert r["paths"] == ["reference", "fast", "short"] and r["short"][0] == pytest.approx(0.0)
    assert "| rome | short − ref | 2 | -50.0 [" in markdown([r], 3)
    assert compare(tmp_path, 3, "rome", ("short",))["paths"] == ["reference", "short"]  # --paths picks the rows
    with pytest.raises(SystemExit, match="holds no top cases"):
        compare(tmp_path, 3, "top")


def test_each_path_spells_out_every_value_so_that_a_later_preset_cannot_move_it():
    from bench.fast_path_quality import path_settings
    from toplens.editors.presets import get_preset
    ref, fast, short = (path_settings("rome", p) for p in ("reference", "fast", "short"))
    assert (ref["v_lr"], ref["early_stop_loss"], ref["precision"]) == (0.5, 0.05, "float32")
    assert (fast["v_lr"], fast["early_stop_loss"], fast["stop_rule"]) == (0.5, 0.05, "fit")
    assert short == json.loads(get_preset("rome", None).to_json())  # ROME's shipped preset is the short path
    top = path_settings("top", "reference")
    assert (top["layers"], top["rel_feat_layer"], top["stage2_keep_weight"]) == ([5], 18, 0.0)  # the layer-5 preset


def test_the_fast_settings_are_the_fast_paths_and_the_reference_ones_the_reference_paths():
    assert FAST == {"precision": "auto", "stop_rule": "fit", "context_lengths": [list(x) for x in FAST_CONTEXT]}
    assert REFERENCE == {"precision": "float32", "stop_rule": "total", "context_lengths": [[5, 5], [5, 10]]}

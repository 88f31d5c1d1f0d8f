import json
import math

import pytest

from bench.paraphrase_traces import edit_for, outcomes, pick, trace
from toplens import ModelAdapter
from toplens.core.scoring import top_tokens
from tests.plugin.editors.test_top import REQUEST


def _write(folder, rows):
    folder.mkdir(parents=True)
    lines = [json.dumps({"case_id": cid, "post": {"efficacy": {"outcomes": [{"success": ok}]},
                                                  "generalization": {"outcomes": [{"prompt": p, "success": s}
                                                                                  for p, s in para.items()]}}})
             for cid, ok, para in rows]
    (folder / "cases.jsonl").write_text("\n".join(lines) + "\n")


def test_the_pairs_are_paraphrases_top_misses_and_rome_takes_where_both_rewrites_take(tmp_path):
    _write(tmp_path / "top", [(1, True, {"a": False, "b": False}), (2, False, {"c": False}), (3, True, {"d": True})])
    _write(tmp_path / "rome", [(1, True, {"a": False, "b": True}), (2, True, {"c": True}), (3, True, {"d": True})])
    top, rome = outcomes(tmp_path / "top"), outcomes(tmp_path / "rome")
    assert top[1] == (True, {"a": False, "b": False})
    assert pick(top, rome, 5) == [(1, "b")]  # case 2: TOP's rewrite failed; case 3: no paraphrase missed


def test_the_settings_of_a_folder_are_its_methods_preset_with_its_overrides(tmp_path):
    (tmp_path / "top-x.settings.json").write_text(json.dumps({"method": "top", "hparams": {
        "key": "sink", "context_lengths": [[2, 5]]}}))
    editor, hp = edit_for(tmp_path / "top-x", None)
    assert editor.name == "top" and hp.key == "sink" and hp.context_lengths == ((2, 5),)
    assert (hp.layers, hp.rel_feat_layer, hp.stage2_keep_weight) == ((5,), 18, 0.0)  # over the layer-5 preset


def test_after_the_last_block_the_last_token_carries_the_whole_gap(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    answer = top_tokens(adapter, REQUEST.text, 1)[0].token
    row = trace(adapter, REQUEST.text, REQUEST.subject, answer, min_gap=-math.inf)  # a random model: any gap
    assert row["last_share_by_layer"][-1] == pytest.approx(1.0, abs=1e-2)
    assert 0 < row["p_new"] <= 1 and (row["subject_layer"] is None or 0 <= row["subject_layer"] < adapter.n_layers)
    assert row["last_half_layer"] is not None and row["last_half_layer"] <= adapter.n_layers - 1

import json

import pytest

from bench import paraphrase_order


def _write(folder, case_outcomes):
    folder.mkdir(parents=True)
    lines = [json.dumps({"case_id": cid, "post": {"generalization": {"outcomes": [
        {"prompt": p, "success": s} for p, s in outs]}}}) for cid, outs in case_outcomes]
    (folder / "cases.jsonl").write_text("\n".join(lines) + "\n")


def test_paraphrases_split_by_where_the_subject_stands(tmp_path, capsys):
    subjects = {1: "France", 2: "Miles Davis"}
    _write(tmp_path / "a", [(1, [("France has its capital in", True), ("The capital of France is", False)]),
                            (2, [("Miles Davis plays the", True), ("The instrument of Miles Davis is", True)])])
    _write(tmp_path / "b", [(1, [("France has its capital in", False), ("The capital of France is", False)])])
    table = paraphrase_order.outcomes(tmp_path / "a", subjects)
    assert table[1] == {"subject first": [1, 1], "subject later": [0, 1]}
    later = paraphrase_order.pooled_rate(table, [1, 2], "subject later")
    assert later["rate"] == pytest.approx(50.0) and later["paraphrases"] == 2 and later["cases"] == 2
    assert 0.0 <= later["low"] <= 50.0 <= later["high"] <= 100.0
    assert paraphrase_order.pooled_rate(table, [2], "subject first")["rate"] == pytest.approx(100.0)

import dataclasses
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


def test_the_subjects_come_from_the_dataset_the_folders_were_evaluated_on(tmp_path, capsys):
    from toplens.analyses.evaluation.builder import builtin_records
    from toplens.analyses.evaluation.datasets import save_records

    record = builtin_records(1)[0]
    data = tmp_path / "one.json"
    save_records([dataclasses.replace(record, case_id=41)], data)
    subject = record.request.subject
    post = {"generalization": {"outcomes": [{"prompt": f"{subject} x", "success": True},
                                            {"prompt": f"y {subject} z", "success": False}]},
            "r_specificity": {"outcomes": [{"prompt": f"w {subject} v", "success": True}]}}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cases.jsonl").write_text(json.dumps({"case_id": 41, "post": post}) + "\n")
    assert paraphrase_order.main(["--out-dir", str(tmp_path), "--variants", "a", "--data", str(data), "--json"]) == 0
    rows = {(r["metric"], r["cases"]): r for r in json.loads(capsys.readouterr().out)}
    order = "rewrite: subject first" if record.request.prompt.startswith("{}") else "rewrite: subject later"
    assert set(rows) == {(m, c) for m in ("generalization", "r_specificity") for c in ("all cases", order)}
    gen, spec = rows["generalization", "all cases"], rows["r_specificity", order]
    assert gen["subject first"]["rate"] == pytest.approx(100.0) and gen["subject later"]["rate"] == pytest.approx(0.0)
    assert spec["subject later"]["rate"] == pytest.approx(100.0) and spec["subject first"]["paraphrases"] == 0

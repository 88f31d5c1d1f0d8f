import json

from tests.analyses.cli.conftest import FAST, known_facts


def test_rie_prints_a_table(toplens, tiny_hooked, tmp_path):
    status, out, _ = toplens(["rie", "--methods", "rome,top", "--n", "2", "--data", known_facts(tmp_path),
                              "--samples", "2", "--window", "2", "--hparams", json.dumps(FAST),
                              "--out", str(tmp_path)], tiny_hooked)
    assert status == 0
    assert "rome" in out and "top" in out and "subject" in out
    rows = json.loads((tmp_path / "rie.json").read_text())["rows"]
    assert rows[0]["n"] == 2
    for row, line in zip(rows, out.splitlines()[1:3], strict=True):  # each mean with its interval over requests
        low, high = row["subject_ci"]
        assert low <= row["subject"] <= high and len(row["relation_ci"]) == 2
        assert line.split()[:5] == [row["method"], "2", f"{row['subject']:.2f}", f"[{low:.2f},", f"{high:.2f}]"]
    assert (tmp_path / "rie.png").exists()


def test_rie_refuses_a_flat_hparams_object_for_two_methods(toplens, tmp_path):
    status, _, err = toplens(["rie", "--data", known_facts(tmp_path), "--hparams", '{"layer": 1}'])
    assert status == 2 and "keyed by method" in err

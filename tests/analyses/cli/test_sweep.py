import json

from tests.analyses.cli.conftest import FAST, known_facts


def test_sweep_writes_points_and_figure(toplens, tiny_hooked, tmp_path):
    status, out, _ = toplens(["sweep", "--data", known_facts(tmp_path), "--n", "2", "--las", "2,3", "--hparams",
                              json.dumps(FAST["top"]), "--out", str(tmp_path / "o")], tiny_hooked)
    assert status == 0
    data = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert [p["la"] for p in data["points"]] == [2, 3] and data["n_records"] == 2
    assert (tmp_path / "o" / "sweep.png").stat().st_size > 0 and "R-Spec" in out
    assert out.splitlines()[2].split() == ["la", "Eff", "Gen", "S-Spec", "R-Spec"]


def test_sweep_names_a_bad_las(toplens):
    status, _, err = toplens(["sweep", "--las", "2,x"])
    assert status == 2 and "--las must be comma-separated integers" in err

import json

from tests.analyses.cli.conftest import FAST, known_facts

from toplens.analyses.cli.sweep import format_sweep
from toplens.analyses.sweep import SweepCase, SweepPoint, SweepResult


def test_sweep_writes_points_and_figure(toplens, tiny_hooked, tmp_path):
    status, out, _ = toplens(["sweep", "--data", known_facts(tmp_path), "--n", "2", "--las", "2,3", "--hparams",
                              json.dumps(FAST["top"]), "--out", str(tmp_path / "o")], tiny_hooked)
    assert status == 0
    data = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert [p["la"] for p in data["points"]] == [2, 3] and data["n_records"] == 2
    assert (tmp_path / "o" / "sweep.png").stat().st_size > 0 and "R-Spec" in out
    assert out.splitlines()[2].split() == ["la", "Eff", "Gen", "S-Spec", "R-Spec", "Score"]
    for point, row in zip(data["points"], out.splitlines()[3:], strict=True):  # known facts: Efficacy only
        low, high = point["intervals"]["efficacy"]
        assert low <= point["efficacy"] <= high and point["intervals"]["n"] == 2
        assert row.split() == [str(point["la"]), f"{point['efficacy']:.1f}", f"[{low:.1f},", f"{high:.1f}]"] + ["-"] * 4


def test_sweep_table_shows_each_rate_and_the_score_with_its_interval():
    cases = (SweepCase(0, 100.0, 50.0, 100.0, 0.0), SweepCase(1, 100.0, 50.0, 100.0, 100.0))
    points = (SweepPoint(2, 100.0, 50.0, 100.0, 50.0, cases), SweepPoint(3, 90.0, None, 80.0, 70.0))
    rows = format_sweep(SweepResult(points, edit_layer=1, n_records=2)).splitlines()
    assert "95% bootstrap interval" in rows[0]
    cells = [c.strip() for c in rows[3][4:].split("]")[:5]]
    assert cells[:3] == ["100.0 [100.0, 100.0", "50.0 [50.0, 50.0", "100.0 [100.0, 100.0"]
    assert cells[3] == "50.0 [0.0, 100.0" and cells[4].startswith("66.7 [0.0, ")  # 4 / (1 + 2 + 1 + 2)
    assert rows[4].split() == ["3", "90.0", "-", "80.0", "70.0", "-"]  # no cases: no brackets
    assert rows[2].split()[-1] == "Score"  # a point without records: no paired difference


def test_sweep_table_gives_each_la_against_the_best_paired():
    cases = (SweepCase(0, 100.0, 50.0, 100.0, 0.0), SweepCase(1, 100.0, 50.0, 100.0, 100.0))
    worse = tuple(SweepCase(c.case_id, 0.0, 50.0, 100.0, 100.0) for c in cases)
    points = (SweepPoint(2, 100.0, 50.0, 100.0, 50.0, cases), SweepPoint(3, 0.0, 50.0, 100.0, 100.0, worse))
    rows = format_sweep(SweepResult(points, edit_layer=1, n_records=2)).splitlines()
    assert rows[2].split()[-5:] == ["Score", "-", "la", "2", "(paired)"]
    assert rows[3].endswith("+0.0 [+0.0, +0.0]")  # the best la against itself
    assert rows[4].split()[-3:] == ["-66.7", "[-80.0,", "+0.0]"]  # Score 0 (Efficacy 0) against 66.7; resampling
    # both records as record 1 gives 0 − 80, as record 0 gives 0 − 0 (R-Spec 0)


def test_sweep_names_a_bad_las(toplens):
    status, _, err = toplens(["sweep", "--las", "2,x"])
    assert status == 2 and "--las must be comma-separated integers" in err


def test_sweeps_run_one_la_each_merge_into_the_sweep_of_both(toplens, tiny_hooked, tmp_path):
    common = ["sweep", "--data", known_facts(tmp_path), "--n", "2", "--hparams", json.dumps(FAST["top"])]
    for las, name in (("2,3", "both"), ("3", "la3"), ("2", "la2")):
        assert toplens([*common, "--las", las, "--out", str(tmp_path / name)], tiny_hooked)[0] == 0
    status, out, _ = toplens(["merge", str(tmp_path / "la3"), str(tmp_path / "la2"), "--out", str(tmp_path / "m")])
    assert status == 0 and "TOP la sweep, edit layer 1, 2 records" in out
    merged = json.loads((tmp_path / "m" / "sweep.json").read_text())
    assert merged == json.loads((tmp_path / "both" / "sweep.json").read_text())
    assert (tmp_path / "m" / "sweep.png").stat().st_size > 0


def test_merge_names_a_folder_without_a_sweep_and_a_repeated_la(toplens, tiny_hooked, tmp_path):
    common = ["sweep", "--data", known_facts(tmp_path), "--n", "1", "--las", "2", "--hparams", json.dumps(FAST["top"])]
    for name in ("a", "b"):
        assert toplens([*common, "--out", str(tmp_path / name)], tiny_hooked)[0] == 0
    (tmp_path / "empty").mkdir()
    status, _, err = toplens(["merge", str(tmp_path / "a"), str(tmp_path / "empty"), "--out", str(tmp_path / "m")])
    assert status == 2 and "folders:" in err and "empty" in err and "sweep.json" in err
    status, _, err = toplens(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")])
    assert status == 2 and "la: [2] appear in more than one sweep" in err


def test_merge_refuses_its_own_input_a_folder_of_both_kinds_and_a_broken_sweep(toplens, tmp_path):
    sweep = SweepResult((SweepPoint(2, 100.0, 50.0, 100.0, 50.0),), edit_layer=1, n_records=2)
    for name in ("a", "b", "both"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "sweep.json").write_text(sweep.to_json())
    (tmp_path / "both" / "shard.json").write_text("{}")
    (tmp_path / "b" / "sweep.json").write_text('{"points": []}')  # no edit_layer
    a, b, both = (str(tmp_path / n) for n in ("a", "b", "both"))
    status, _, err = toplens(["merge", a, "--out", a])
    assert status == 2 and "--out" in err and "is one of the sweep folders" in err
    assert (tmp_path / "a" / "sweep.json").read_text() == sweep.to_json()  # untouched
    status, _, err = toplens(["merge", a, both, "--out", str(tmp_path / "m")])
    assert status == 2 and "holds both sweep.json and shard.json" in err and "both" in err
    status, _, err = toplens(["merge", a, b, "--out", str(tmp_path / "m")])
    assert status == 2 and "is not a toplens sweep.json (KeyError" in err and str(tmp_path / "b") in err
    assert not (tmp_path / "m" / "sweep.json").exists()

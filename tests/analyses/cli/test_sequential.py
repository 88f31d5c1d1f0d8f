import json

from tests.analyses.cli.test_eval import _rs_file
from tests.conftest import param_hash

ROME = json.dumps({"rome": {"layer": 1, "v_num_grad_steps": 3, "mom2_adjustment": False, "context_lengths": [[1, 3]]}})


def test_sequential_writes_the_curve_and_its_figure(tiny_hooked, tmp_path, toplens):
    weights = param_hash(tiny_hooked)
    out = tmp_path / "out"
    argv = ["sequential", "--methods", "rome", "--data", str(_rs_file(tmp_path)), "--n", "1", "--checkpoints", "1,5",
            "--out", str(out), "--hparams", ROME, "--no-generation", "--retention", "1", "--json"]
    status, stdout, _ = toplens(argv, tiny_hooked)
    assert status == 0 and param_hash(tiny_hooked) == weights
    (run,) = json.loads(stdout)["runs"]
    assert run["label"] == "rome" and [p["edits"] for p in run["points"]] == [1]
    assert (out / "sequential.png").exists() and (out / "rome" / "curve.jsonl").exists()
    assert json.loads((out / "curve.json").read_text()) == json.loads(stdout)


def test_sequential_refuses_more_edits_than_records(tiny_hooked, tmp_path, toplens):
    argv = ["sequential", "--data", str(_rs_file(tmp_path)), "--n", "5", "--out", str(tmp_path / "o"), "--hparams", ROME]
    status, _, err = toplens(argv, tiny_hooked)
    assert status != 0 and "--n 5: --data" in err and "has only 2 records" in err

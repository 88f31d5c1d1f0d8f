import json

import pytest

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


def test_sequential_refuses_a_run_with_nothing_held_out_unless_retention_and_fluency_are_off(tiny_hooked, tmp_path,
                                                                                           toplens):
    base = ["sequential", "--data", str(_rs_file(tmp_path)), "--n", "2", "--checkpoints", "2"]
    status, _, err = toplens(base + ["--out", str(tmp_path / "a"), "--no-generation", "--hparams", ROME], tiny_hooked)
    assert status != 0 and "has no records left over for retention and Fluency" in err
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The violin is played with a bow.\n\nParis lies on the Seine.\n")
    argv = base + ["--out", str(tmp_path / "b"), "--no-generation", "--retention", "0", "--project", "nullspace",
                   "--hparams", json.dumps({"rome": {**json.loads(ROME)["rome"], "nullspace_threshold": 0.5}}),
                   "--corpus", str(corpus), "--json"]
    status, stdout, err = toplens(argv, tiny_hooked)
    assert status == 0, err
    (run,) = json.loads(stdout)["runs"]
    assert run["label"] == "rome+nullspace" and run["points"][0]["retention"] is None
    stored = json.loads((tmp_path / "b" / "rome-nullspace" / "run.json").read_text())
    assert set(stored["corpus"]) == {"texts"}


def test_sequential_checks_the_corpus_flags_before_loading(tmp_path, toplens, monkeypatch):
    monkeypatch.setattr("toplens.analyses.cli.common.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    base = ["sequential", "--data", str(_rs_file(tmp_path)), "--n", "1", "--out", str(tmp_path / "o"), "--hparams", ROME]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Dvořák\n".encode("utf-16"))
    for extra, message in ((["--corpus-tokens", "100"], "need --project nullspace; got no --project"),
                           (["--project", "nullspace", "--corpus", str(tmp_path / "none.txt")], "none.txt' does not exist"),
                           (["--project", "nullspace", "--corpus", str(latin)], "is not UTF-8 text"),
                           (["--project", "nullspace", "--corpus-tokens", "0"], "--corpus-tokens must be at least 1"),
                           (["--project", "nullspace", "--corpus", "x", "--corpus-tokens", "5"], "not both")):
        status, _, err = toplens(base + extra)
        assert status != 0 and message in err, (extra, err)

import json

import pytest

from tests.conftest import param_hash

from toplens.analyses.cli import main

FAST = {"memit": {"layers": [1, 2], "v_num_grad_steps": 5, "context_lengths": [[1, 3]]},
        "rome": {"layer": 1, "v_num_grad_steps": 5, "context_lengths": [[1, 3]]}}
# CounterFact records and bare requested_rewrite objects are both accepted.
BATCH = [{"case_id": 0, "requested_rewrite": {"prompt": "{} plays the", "subject": "Miles Davis",
                                              "target_new": {"str": "Paris"}, "target_true": {"str": "trumpet"}}},
         {"prompt": "{} plays the", "subject": "Jimi Hendrix", "target_new": {"str": "Berlin"},
          "target_true": {"str": "guitar"}}]


@pytest.fixture
def tiny_loaded(monkeypatch, tiny_hooked):
    monkeypatch.setattr("toplens.analyses.cli.common.load_model", lambda name, backend: tiny_hooked)
    return tiny_hooked


def _batch_file(tmp_path, items=BATCH):
    path = tmp_path / "requests.json"
    path.write_text(json.dumps(items))
    return str(path)


@pytest.mark.parametrize("method", ["memit", "rome"])
def test_batch_edit_reports_each_request_and_reverts(method, tiny_loaded, tmp_path, capsys):
    weights = param_hash(tiny_loaded)
    argv = ["edit", "--method", method, "--requests", _batch_file(tmp_path), "--hparams",
            json.dumps(FAST[method]), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_requests"] == 2 and report["restored_bitexact"] is True
    assert report["weight_edits"] == (1 if method == "memit" else 2)
    assert [r["request"]["target_new"] for r in report["requests"]] == [" Paris", " Berlin"]
    assert all(r["post"]["p_new"] > r["pre"]["p_new"] for r in report["requests"])
    assert param_hash(tiny_loaded) == weights


def test_batch_table_output(tiny_loaded, tmp_path, capsys):
    assert main(["edit", "--method", "rome", "--requests", _batch_file(tmp_path), "--hparams",
                 json.dumps(FAST["rome"])]) == 0
    out = capsys.readouterr().out
    assert "ROME batch of 2" in out and "Miles Davis" in out and "restored bit for bit" in out


def test_bad_request_file_names_the_item(tiny_loaded, tmp_path, capsys):
    bad = [BATCH[0], {"prompt": "{} plays the", "subject": "Jimi Hendrix"}]
    assert main(["edit", "--requests", _batch_file(tmp_path, bad)]) == 2
    err = capsys.readouterr().err
    assert "item 1" in err and "target_new" in err


def test_requests_excludes_single_request_flags(tmp_path, capsys):
    assert main(["edit", "--requests", _batch_file(tmp_path), "--subject", "Miles Davis"]) == 2
    assert capsys.readouterr().err == "toplens edit: error: --requests cannot be combined with --subject\n"


def test_hparams_from_a_file_and_bad_hparams_named_before_any_edit(tiny_loaded, tmp_path, capsys):
    weights = param_hash(tiny_loaded)
    path = tmp_path / "hp.json"
    path.write_text(json.dumps(FAST["rome"]))
    assert main(["edit", "--method", "rome", "--requests", _batch_file(tmp_path), "--hparams", str(path),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["restored_bitexact"] is True
    assert main(["edit", "--method", "rome", "--requests", _batch_file(tmp_path), "--hparams", "[1, 2]"]) == 2
    assert "--hparams must be a JSON object" in capsys.readouterr().err
    assert main(["edit", "--method", "rome", "--requests", _batch_file(tmp_path), "--hparams",
                 '{"v_lr": -1}']) == 2
    assert "RomeHparams.v_lr" in capsys.readouterr().err
    assert param_hash(tiny_loaded) == weights


def test_single_edit_reports_before_and_after_and_reverts(tiny_loaded, tmp_path, capsys):
    weights = param_hash(tiny_loaded)
    saved = tmp_path / "edit.safetensors"
    argv = ["edit", "--method", "rome", "--prompt", "{} plays the", "--subject", "Miles Davis", "--target", " Paris",
            "--target-true", " trumpet", "--hparams", json.dumps({"rome": FAST["rome"]}), "--layer", "2",
            "--save", str(saved)]
    assert main(argv + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layer"] == 2 and report["restored_bitexact"] is True and saved.exists()
    assert report["post"]["p_new"] > report["pre"]["p_new"] and len(report["pre"]["top5"]) == 5
    assert param_hash(tiny_loaded) == weights
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert table.startswith("ROME edit on") and "top-5 next tokens" in table and "restored bit for bit" in table


def test_layer_flag_sets_the_one_edit_layer_of_every_method(tiny_loaded, capsys):
    """--layer is ROME's and RETS's `layer` and TOP's and MEMIT's only entry of `layers`."""
    hp = {"top": {"rel_feat_layer": 1, "v_num_grad_steps1": 2, "v_num_grad_steps2": 2, "context_lengths": [[1, 3]]},
          "memit": {"v_num_grad_steps": 2, "context_lengths": [[1, 3]], "mom2_update_weight": 1.0}}
    for method in ("top", "memit"):
        argv = ["edit", "--method", method, "--prompt", "{} plays the", "--subject", "Miles Davis",
                "--target", " Paris", "--target-true", " trumpet", "--hparams", json.dumps(hp[method]),
                "--layer", "2", "--json"]
        assert main(argv) == 0, capsys.readouterr().err
        report = json.loads(capsys.readouterr().out)
        assert report["layer"] == 2 and report["restored_bitexact"] is True

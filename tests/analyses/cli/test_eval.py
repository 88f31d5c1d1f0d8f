import json

import pytest

from toplens import editors
from toplens.analyses.cli import main
from toplens.analyses.evaluation.cases import CASES_FILE, read_cases

FAST_JSON = json.dumps({"rome": {"layer": 1, "v_num_grad_steps": 5, "mom2_adjustment": False,
                                 "context_lengths": [[2, 3]]}})


def _rs_file(tmp_path):
    def raw(case_id, subject, refs=None):
        out = {"case_id": case_id,
               "requested_rewrite": {"prompt": "Miles Davis plays the {}", "subject": subject, "relation_id": "P1303",
                                     "target_new": {"str": "Paris"}, "target_true": {"str": "France"}},
               "paraphrase_prompts": [f"Jimi Hendrix plays the {subject}"],
               "neighborhood_prompts": ["Miles Davis plays the guitar"],
               "relation_specific_prompts": [f"Toyota is {subject}", f"The Eiffel Tower is {subject}"],
               "generation_prompts": [f"{subject} is"]}
        if refs:
            out["reference_texts"] = refs
        return out

    path = tmp_path / "rs.json"
    path.write_text(json.dumps([raw(7, "trumpet", ["Paris is the capital of France."]), raw(8, "guitar")]))
    return path


def test_cli_reads_counterfact_rs_and_resumes(tiny_hooked, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("toplens.analyses.cli.common.load_model", lambda name, backend: tiny_hooked)
    out = tmp_path / "out"
    argv = ["eval", "--methods", "rome", "--data", str(_rs_file(tmp_path)), "--out", str(out),
            "--hparams", FAST_JSON, "--generation-tokens", "4"]
    assert main(argv + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rome"]["n"] == 2 and summary["rome"]["consistency"] is not None
    lines = read_cases(out / CASES_FILE)
    assert [(line["case_id"], line["method"]) for line in lines] == [(7, "rome"), (8, "rome")]
    assert lines[0]["consistency"] is not None and lines[1]["consistency"] is None

    monkeypatch.setattr(editors.rome, "compute", lambda *a: pytest.fail("a finished case was edited again"))
    assert main(argv) == 0 and len(read_cases(out / CASES_FILE)) == 2
    table = capsys.readouterr().out
    assert "R-Spec" in table and table.splitlines()[1].startswith("rome")
    assert main(argv + ["--no-generation"]) == 2
    assert "another output folder" in capsys.readouterr().err


def test_cli_names_an_unknown_method(tmp_path, monkeypatch, capsys):
    def no_model(*args):
        raise AssertionError("the model should not be loaded")

    monkeypatch.setattr("toplens.analyses.cli.common.load_model", no_model)
    assert main(["eval", "--methods", "rome,bogus", "--out", str(tmp_path)]) == 2
    assert "'bogus'" in capsys.readouterr().err

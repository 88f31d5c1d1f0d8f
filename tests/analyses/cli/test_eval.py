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
    assert 0 <= summary["rome"]["efficacy_at_1"] <= 100 and 0 <= summary["rome"]["pre"]["efficacy_at_1"] <= 100
    lines = read_cases(out / CASES_FILE)
    assert [(line["case_id"], line["method"]) for line in lines] == [(7, "rome"), (8, "rome")]
    assert lines[0]["consistency"] is not None and lines[1]["consistency"] is None

    monkeypatch.setattr(editors.rome, "compute", lambda *a: pytest.fail("a finished case was edited again"))
    assert main(argv) == 0 and len(read_cases(out / CASES_FILE)) == 2
    table = capsys.readouterr().out
    assert "R-Spec" in table and table.splitlines()[1].startswith("rome")
    head, row = table.splitlines()[0].split(), table.splitlines()[1].split()
    assert head[2:4] == ["Eff", "Eff@1"] and len(row) == len(head)
    assert float(row[head.index("Eff@1")]) == pytest.approx(summary["rome"]["efficacy_at_1"], abs=0.05)
    assert f"Eff@1 {summary['rome']['pre']['efficacy_at_1']:.1f}" in table  # the pre-edit rate too
    assert main(argv + ["--no-generation"]) == 2
    assert "another output folder" in capsys.readouterr().err


def test_cli_names_an_unknown_method(tmp_path, monkeypatch, capsys):
    def no_model(*args):
        raise AssertionError("the model should not be loaded")

    monkeypatch.setattr("toplens.analyses.cli.common.load_model", no_model)
    assert main(["eval", "--methods", "rome,bogus", "--out", str(tmp_path)]) == 2
    assert "'bogus'" in capsys.readouterr().err


def test_the_table_shows_a_dash_for_efficacy_at_1_where_no_case_has_it():
    from toplens.analyses.cli.eval import format_summary

    rates = dict(efficacy=100.0, generalization=50.0, s_specificity=75.0, r_specificity=25.0)
    entry = {"n": 1, **rates, "efficacy_at_1": None, "score": 50.0, "fluency": None, "consistency": None,
             **{f"{k}_magnitude": 1.0 for k in rates}, "pre": {**rates, "efficacy_at_1": None}, "seconds_per_edit": 1.0}
    head, row = format_summary({"rome": entry}).splitlines()[:2]
    cells = dict(zip(head.split(), row.split()))
    assert cells["Eff"] == "100.0" and cells["Eff@1"] == "-" and cells["Score"] == "50.0"


def test_the_table_prints_each_interval_under_its_rate():
    from toplens.analyses.cli.eval import format_summary

    rates = dict(efficacy=100.0, generalization=50.0, s_specificity=75.0, r_specificity=25.0)
    intervals = {**{k: [v - 10, v] for k, v in rates.items()}, "efficacy_at_1": None, "score": [40.0, 60.0],
                 "level": 0.95, "draws": 2000, "n": 4}
    entry = {"n": 4, **rates, "efficacy_at_1": None, "score": 50.0, "fluency": None, "consistency": None,
             **{f"{k}_magnitude": 1.0 for k in rates}, "pre": {**rates, "efficacy_at_1": None}, "seconds_per_edit": 1.0,
             "intervals": intervals}
    head, row, ci = format_summary({"rome": entry}).splitlines()[:3]
    assert ci.startswith("  95% CI")
    cells = dict(zip(head.split()[2:], ci.split()[2:]))
    assert cells == {"Eff": "90-100", "Eff@1": "-", "Gen": "40-50", "S-Spec": "65-75", "R-Spec": "15-25",
                     "Score": "40-60", "Flu": "-", "Cons": "-"}


def test_cli_batch_sizes_give_the_same_lines_and_a_bad_one_is_refused(tiny_hooked, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("toplens.analyses.cli.common.load_model", lambda name, backend: tiny_hooked)
    base = ["eval", "--methods", "rome", "--data", str(_rs_file(tmp_path)), "--hparams", FAST_JSON,
            "--generation-tokens", "3"]
    assert main(base + ["--out", str(tmp_path / "one"), "--batch-size", "1"]) == 0
    from toplens.analyses.evaluation import runner
    chunks, real = [], runner.chunk_lines
    monkeypatch.setattr(runner, "chunk_lines", lambda model, chunk, *a: chunks.append(len(chunk)) or real(model, chunk, *a))
    assert main(base + ["--out", str(tmp_path / "default")]) == 0
    assert chunks == [2]  # the default batches both records
    one, default = (read_cases(tmp_path / d / CASES_FILE) for d in ("one", "default"))
    assert [x["generations"] for x in one] == [x["generations"] for x in default] and len(one) == 2
    for x, y in zip(one, default, strict=True):
        for name in ("efficacy", "generalization", "s_specificity", "r_specificity"):
            assert [o["success"] for o in x["post"][name]["outcomes"]] == [o["success"] for o in y["post"][name]["outcomes"]]
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "bad"), "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err and not (tmp_path / "bad" / CASES_FILE).exists()

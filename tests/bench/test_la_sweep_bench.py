import json

import pytest

from bench.la_sweep import eval_point, markdown
from tests.analyses.cli.test_eval import _rs_file
from toplens.analyses.cli import main
from toplens.analyses.sweep import SweepResult, join_sweeps

TOP = {"layers": [1], "rel_feat_layer": 1, "v_num_grad_steps1": 4, "v_num_grad_steps2": 4, "mom2_adjustment": False,
       "context_lengths": [[2, 3]]}


def test_an_eval_run_gives_the_sweeps_point_at_its_la(tiny_hooked, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("toplens.analyses.cli.common.load_model", lambda name, backend: tiny_hooked)
    data, hp = str(_rs_file(tmp_path)), json.dumps(TOP)
    common = ["--data", data, "--hparams", hp]
    assert main(["sweep", *common, "--n", "2", "--las", "2,3", "--out", str(tmp_path / "both")]) == 0
    assert main(["sweep", *common, "--n", "2", "--las", "3", "--out", str(tmp_path / "la3")]) == 0
    evaluated = json.dumps({**TOP, "rel_feat_layer": 1})  # la 2 from edit layer 1
    assert main(["eval", "--methods", "top", "--data", data, "--hparams", evaluated, "--no-generation",
                 "--out", str(tmp_path / "ev")]) == 0
    capsys.readouterr()
    both = SweepResult.from_json((tmp_path / "both" / "sweep.json").read_text())
    la3 = SweepResult.from_json((tmp_path / "la3" / "sweep.json").read_text())
    point = eval_point(tmp_path / "ev", 2, la3)
    assert point.points[0] == both.points[0]  # the same records' rates, measured by the eval
    assert join_sweeps([la3, point]) == both
    text = markdown(both, "python bench/la_sweep.py", "")
    assert "| 2 | 2 |" in text and "| 3 | 2 |" in text
    with pytest.raises(SystemExit, match="differ from the sweep's at la 3"):
        eval_point(tmp_path / "ev", 3, la3)

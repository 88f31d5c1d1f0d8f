import json

from tests.conftest import param_hash
from tests.analyses.cli.conftest import FAST, REQUEST


def test_independence_prints_the_rows_and_writes_json(toplens, tiny_hooked, tmp_path):
    weights = param_hash(tiny_hooked)
    status, out, _ = toplens(["independence", *REQUEST, "--hparams", json.dumps(FAST), "--n-random", "2",
                              "--out", str(tmp_path)], tiny_hooked)
    assert status == 0
    assert param_hash(tiny_hooked) == weights
    data = json.loads((tmp_path / "independence.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["v_init", "top_v_star", "rome_v_star", "random_0", "random_1"]
    assert (data["layer"], data["la"]) == (1, 2)  # FAST's TOP: layer 1, la = 1 + 1
    assert "top_v_star" in out and "p_fixed: max - min" in out
    status, _, err = toplens(["independence", *REQUEST, "--hparams", '{"rel_feat_layer": 0}', "--no-rome"])
    assert status == 2 and "rel_feat_layer" in err

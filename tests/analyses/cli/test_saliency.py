import json

from tests.analyses.cli.conftest import FAST, REQUEST


def test_saliency_writes_json_and_heatmaps(toplens, tiny_hooked, tmp_path):
    status, out, _ = toplens(["saliency", *REQUEST, "--method", "top", "--hparams", json.dumps(FAST),
                              "--out", str(tmp_path)], tiny_hooked)
    assert status == 0
    data = json.loads((tmp_path / "saliency_top.json").read_text())
    assert data["method"] == "top" and len(data["grad_norm"]["values"]) == 4
    assert (tmp_path / "saliency_top_grad_norm.png").exists()
    assert "argmax token" in out


def test_saliency_takes_flat_hparams_and_steps(toplens, tiny_hooked):
    status, out, _ = toplens(["saliency", *REQUEST, "--hparams", json.dumps(FAST["rome"]), "--steps", "2",
                              "--json"], tiny_hooked)
    report = json.loads(out)
    assert status == 0 and report["method"] == "rome" and report["edit_layer"] == 1 and report["steps"] <= 2

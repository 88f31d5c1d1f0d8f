import json

from toplens.analyses.evaluation.cases import summaries_from_cases

from tests.conftest import param_hash
from tests.analyses.cli.conftest import FAST, known_facts


def test_figures_writes_every_figure_and_an_index(toplens, tiny_hooked, tmp_path):
    weights = param_hash(tiny_hooked)
    out = tmp_path / "figs"
    status, printed, _ = toplens(["figures", "--out", str(out), "--data", known_facts(tmp_path), "--n", "2",
                                  "--samples", "2", "--las", "2,3", "--hparams", json.dumps(FAST), "--json"],
                                 tiny_hooked)
    assert status == 0
    report = json.loads(printed)
    assert report["figures"] == ["saliency_rome", "trace", "rie", "sweep", "eval"]
    for stem in report["figures"]:
        assert (out / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    index = (out / "index.md").read_text()
    assert all(f"![{stem}]({stem}.png)" in index for stem in report["figures"])
    assert set(summaries_from_cases(out / "eval" / "cases.jsonl")) == {"rome", "top"}
    assert param_hash(tiny_hooked) == weights

import argparse
import json

import pytest
import torch

from toplens.analyses.figures_cli import add_figures_parser, add_sweep_parser, parse_las, summaries_from_cases

FAST = json.dumps({"rome": {"layer": 1, "v_num_grad_steps": 3, "context_lengths": [[1, 3]]},
                   "top": {"layers": [1], "rel_feat_layer": 1, "v_num_grad_steps1": 3, "v_num_grad_steps2": 3,
                           "context_lengths": [[1, 3]]}})


def _known_facts(tmp_path):
    facts = [{"known_id": i, "subject": s, "attribute": a, "template": "{} plays the", "prompt": f"{s} plays the",
              "relation_id": "P1303"} for i, (s, a) in enumerate([("Miles Davis", "trumpet"),
                                                                   ("Jimi Hendrix", "guitar")])]
    path = tmp_path / "known.json"
    path.write_text(json.dumps(facts))
    return str(path)


def _run(argv, model, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    add_sweep_parser(sub), add_figures_parser(sub)
    args = parser.parse_args(argv)
    assert args.func(args, model=model) == 0
    return capsys.readouterr().out


def test_parse_las():
    assert parse_las("2, 3") == [2, 3] and parse_las(None) is None
    with pytest.raises(ValueError, match="--las"):
        parse_las("2,x")


def test_sweep_writes_points_and_figure(tiny_hooked, tmp_path, capsys):
    out = _run(["sweep", "--data", _known_facts(tmp_path), "--n", "2", "--las", "2,3", "--hparams",
                json.dumps(json.loads(FAST)["top"]), "--out", str(tmp_path / "o")], tiny_hooked, capsys)
    data = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert [p["la"] for p in data["points"]] == [2, 3] and data["n_records"] == 2
    assert (tmp_path / "o" / "sweep.png").stat().st_size > 0 and "R-Spec" in out


def test_figures_writes_every_figure_and_an_index(tiny_hooked, tmp_path, capsys):
    saved = [p.detach().clone() for p in tiny_hooked.parameters()]
    out = tmp_path / "figs"
    report = json.loads(_run(["figures", "--out", str(out), "--data", _known_facts(tmp_path), "--n", "2",
                              "--samples", "2", "--las", "2,3", "--hparams", FAST, "--json"], tiny_hooked, capsys))
    assert report["figures"] == ["saliency_rome", "trace", "rie", "sweep", "eval"]
    for stem in report["figures"]:
        assert (out / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    index = (out / "index.md").read_text()
    assert all(f"![{stem}]({stem}.png)" in index for stem in report["figures"])
    assert set(summaries_from_cases(out / "eval" / "cases.jsonl")) == {"rome", "top"}
    assert all(torch.equal(a, b) for a, b in zip(saved, tiny_hooked.parameters()))

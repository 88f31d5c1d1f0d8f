import argparse
import json

import pytest
import torch

from toplens.analyses.analysis_cli import add_rie_parser, add_saliency_parser, add_trace_parser

# Flags that keep the tiny runs short; the request is one the tiny tokenizers can split.
REQUEST = ["--prompt", "{} plays the", "--subject", "Miles Davis", "--target", " Paris", "--target-true", " trumpet"]
FAST = json.dumps({"rome": {"layer": 1, "v_num_grad_steps": 3, "context_lengths": [[1, 3]]},
                   "top": {"layers": [1], "rel_feat_layer": 1, "v_num_grad_steps1": 3, "v_num_grad_steps2": 3,
                           "context_lengths": [[1, 3]]}})


def _run(argv, model, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    add_saliency_parser(sub), add_trace_parser(sub), add_rie_parser(sub)
    args = parser.parse_args(argv)
    assert args.func(args, model=model) == 0
    return capsys.readouterr().out


def test_defaults_are_the_danielle_darrieux_request():
    parser = argparse.ArgumentParser()
    add_trace_parser(parser.add_subparsers())
    args = parser.parse_args(["trace"])
    assert (args.prompt, args.subject, args.target, args.target_true) == (
        "The mother tongue of {} is", "Danielle Darrieux", " English", " French")


def test_saliency_writes_json_and_heatmaps(tiny_hooked, tmp_path, capsys):
    out = _run(["saliency", *REQUEST, "--method", "top", "--hparams", FAST, "--out", str(tmp_path)],
               tiny_hooked, capsys)
    data = json.loads((tmp_path / "saliency_top.json").read_text())
    assert data["method"] == "top" and len(data["grad_norm"]["values"]) == 4
    assert (tmp_path / "saliency_top_grad_norm.png").exists()
    assert "argmax token" in out


def test_trace_before_and_after_an_edit(tiny_bridge, tmp_path, capsys):
    saved = [p.detach().clone() for p in tiny_bridge.parameters()]
    out = _run(["trace", *REQUEST, "--kind", "mlp", "--samples", "2", "--window", "2", "--method", "rome",
                "--hparams", FAST, "--out", str(tmp_path), "--json"], tiny_bridge, capsys)
    assert all(torch.equal(a, b) for a, b in zip(saved, tiny_bridge.parameters()))
    report = json.loads(out)
    assert report["before"]["mlp"]["answer"] == " trumpet" and report["after"]["mlp"]["answer"] == " Paris"
    grid = json.loads((tmp_path / "trace_mlp.json").read_text())["indirect_effect"]
    assert len(grid) == 4 and (tmp_path / "trace_mlp_edited.json").exists() and (tmp_path / "trace.png").exists()


def test_rie_prints_a_table(tiny_hooked, tmp_path, capsys):
    facts = [{"known_id": i, "subject": s, "attribute": a, "template": "{} plays the", "prompt": f"{s} plays the",
              "relation_id": "P1303"} for i, (s, a) in enumerate([("Miles Davis", "trumpet"),
                                                                   ("Jimi Hendrix", "guitar")])]
    data = tmp_path / "known.json"
    data.write_text(json.dumps(facts))
    out = _run(["rie", "--methods", "rome,top", "--n", "2", "--data", str(data), "--samples", "2",
                "--window", "2", "--hparams", FAST, "--out", str(tmp_path)], tiny_hooked, capsys)
    assert "rome" in out and "top" in out and "subject" in out
    assert json.loads((tmp_path / "rie.json").read_text())["rows"][0]["n"] == 2
    assert (tmp_path / "rie.png").exists()


def test_trace_rejects_an_unknown_method(tiny_hooked, capsys):
    with pytest.raises(ValueError, match="method"):
        _run(["trace", *REQUEST, "--method", "nope"], tiny_hooked, capsys)


def test_independence_prints_the_rows_and_writes_json(tiny_hooked, tmp_path, capsys):
    from toplens.analyses.analysis_cli import add_independence_parser

    parser = argparse.ArgumentParser()
    add_independence_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["independence", *REQUEST, "--hparams", FAST, "--n-random", "2", "--out", str(tmp_path)])
    saved = [p.detach().clone() for p in tiny_hooked.parameters()]
    assert args.func(args, model=tiny_hooked) == 0
    out = capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(saved, tiny_hooked.parameters()))
    data = json.loads((tmp_path / "independence.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["v_init", "top_v_star", "rome_v_star", "random_0", "random_1"]
    assert (data["layer"], data["la"]) == (1, 2)  # FAST's TOP: layer 1, la = 1 + 1
    assert "top_v_star" in out and "p_fixed: max - min" in out
    args = parser.parse_args(["independence", *REQUEST, "--hparams", '{"rel_feat_layer": 0}', "--no-rome"])
    with pytest.raises(Exception, match="rel_feat_layer"):
        args.func(args, model=tiny_hooked)

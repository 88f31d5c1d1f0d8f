import json

from toplens.analyses.cli import build_parser

from tests.conftest import param_hash

from tests.analyses.cli.conftest import FAST, REQUEST


def test_defaults_are_the_danielle_darrieux_request():
    args = build_parser().parse_args(["trace"])
    assert (args.prompt, args.subject, args.target, args.target_true) == (
        "The mother tongue of {} is", "Danielle Darrieux", " English", " French")


def test_trace_before_and_after_an_edit(toplens, tiny_bridge, tmp_path):
    weights = param_hash(tiny_bridge)
    status, out, _ = toplens(["trace", *REQUEST, "--kind", "mlp", "--samples", "2", "--window", "2", "--method",
                              "rome", "--hparams", json.dumps(FAST), "--out", str(tmp_path), "--json"], tiny_bridge)
    assert status == 0
    assert param_hash(tiny_bridge) == weights
    report = json.loads(out)
    assert report["before"]["mlp"]["answer"] == " trumpet" and report["after"]["mlp"]["answer"] == " Paris"
    grid = json.loads((tmp_path / "trace_mlp.json").read_text())["indirect_effect"]
    assert len(grid) == 4 and (tmp_path / "trace_mlp_edited.json").exists() and (tmp_path / "trace.png").exists()


def test_trace_of_the_original_model_only_prints_a_table(toplens, tiny_hooked):
    status, out, _ = toplens(["trace", *REQUEST, "--kind", "resid", "--samples", "2"], tiny_hooked)
    assert status == 0 and out.startswith("original, o: resid (answer ' trumpet')") and "after" not in out


def test_trace_rejects_an_unknown_method(toplens, tiny_hooked):
    status, _, err = toplens(["trace", *REQUEST, "--method", "nope"], tiny_hooked)
    assert status == 2 and "toplens trace: error: --method: unknown method 'nope'" in err

import json

import pytest

from bench.top_variants import VARIANTS, base_settings, main, parse_define, run_variant
from toplens.editors.presets import get_preset

METRICS = ("efficacy", "generalization", "s_specificity", "r_specificity", "efficacy_at_1")


def _write(folder, rows):
    folder.mkdir(parents=True)
    lines = []
    for cid, rates, nll in rows:
        post = {m: {"rate": r, "outcomes": [{"nll_wanted": nll}]} for m, r in zip(METRICS, rates)}
        lines.append(json.dumps({"case_id": cid, "post": post}))
    (folder / "cases.jsonl").write_text("\n".join(lines) + "\n")


def test_the_table_pairs_the_variants_cases_in_the_benchmark_order(tmp_path, capsys):
    _write(tmp_path / "rome", [(5, [1, 1, 1, 0.5, 1], 0.1), (2, [1, 0, 1, 1, 0], 0.2), (7, [0, 0, 0, 0, 0], 3.0)])
    _write(tmp_path / "top", [(5, [1, 1, 1, 1, 1], 1.0), (2, [1, 1, 1, 1, None], 2.0)])
    doc = tmp_path / "doc.md"
    assert main(["--variants", "rome,top", "--skip-eval", "--out-dir", str(tmp_path), "--doc", str(doc)]) == 0
    rows = {r["variant"]: r for r in json.loads(doc.with_suffix(".json").read_text())}
    assert rows["rome"]["n"] == rows["top"]["n"] == 2  # case 7 is only in one folder
    assert rows["top"]["value"][:5] == pytest.approx([100, 100, 100, 100, 100])  # Eff@1 None left out
    assert rows["top"]["diff"]["value"][1] == pytest.approx(50.0)  # Gen: 100 against rome's 50
    assert rows["top"]["median_rewrite_nll"] == pytest.approx(1.5)
    text = doc.read_text()
    assert "| variant − rome |" in text and "| top | 2 | +0.0 [" in text  # top's row in the paired table


def test_a_folder_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "top"
    out.parent.joinpath("top.settings.json").write_text(json.dumps({"method": "top", "hparams": {"v_lr": 9}}))
    with pytest.raises(SystemExit, match="other settings"):
        run_variant("top", "top", {}, 1, out)


def test_definitions_name_a_method_and_settings():
    assert parse_define('x=top:{"stage2_reset": "none"}') == ("x", ("top", {"stage2_reset": "none"}))
    with pytest.raises(SystemExit, match="NAME=METHOD:JSON"):
        parse_define("x=bogus:{}")
    assert all(method in ("rome", "top", "rets", "memit") for method, _ in VARIANTS.values())
    for method, settings in VARIANTS.values():  # every variant is a valid setting of its method, as it runs
        type(get_preset(method, None)).from_dict({**get_preset(method, None).to_dict(), **base_settings(method),
                                                  **settings})


def test_the_variants_run_over_the_layer_5_preset_they_were_defined_over():
    preset = get_preset("top", None).to_dict()
    top = {**preset, **base_settings("top")}
    assert (list(top["layers"]), top["rel_feat_layer"], top["stage2_keep_weight"], top["mom2_adjustment"]) == (
        [5], 18, 0.0, False)
    assert base_settings("memit") == {}


def test_a_dataset_file_names_the_table(tmp_path):
    for name in ("rome", "top"):
        _write(tmp_path / name, [(0, [1, 1, 1, 1, 1], 0.1)])
    doc = tmp_path / "doc.md"
    data = str(tmp_path / "known_1000.json")
    assert main(["--variants", "rome,top", "--skip-eval", "--out-dir", str(tmp_path), "--doc", str(doc),
                 "--data", data]) == 0
    assert doc.read_text().startswith("# TOP variants on known_1000.json\n")
    assert f"toplens eval --data {data} --no-generation" in doc.read_text()


def test_a_folder_run_on_other_data_is_refused(tmp_path):
    from bench.top_variants import FAST
    out = tmp_path / "top"
    stored = {"method": "top", "hparams": dict(FAST), "data": "../known.json"}
    out.parent.joinpath("top.settings.json").write_text(json.dumps(stored))
    with pytest.raises(SystemExit, match="other settings or data"):
        run_variant("top", "top", {}, 1, out)  # the built-in benchmark this time


def test_the_rome_variants_keep_their_meaning_across_the_short_path():
    rome = get_preset("rome", None)
    assert base_settings("rome") == {"v_lr": 0.5, "early_stop_loss": 0.05, "precision": "auto"}  # the recorded runs' path
    method, short = VARIANTS["rome-short"]
    assert rome.replace(**{**base_settings(method), **short}) == rome  # "rome-short" is the shipped preset


def test_the_short_top_variant_is_the_default_preset_on_the_short_path():
    from bench.top_variants import FAST
    from toplens.editors.presets import short_path

    method, settings = VARIANTS["top-l8-short"]
    hp = get_preset("top", None).replace(**{**base_settings(method), **FAST, **settings})  # as the eval runs it
    assert hp == short_path(get_preset("top", None))

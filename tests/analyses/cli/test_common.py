import argparse
import json

import pytest

from toplens.analyses.cli import build_parser
from toplens.analyses.cli.checks import UsageError
from toplens.analyses.cli.common import hparams_overrides, parse_ints, parse_methods, resolve_hparams
from toplens.editors.presets import get_preset

KEYED = {"rome": {"layer": 4}, "top": {"rel_feat_layer": 2}}


def test_a_keyed_object_gives_each_method_its_entry_and_ignores_the_others():
    assert hparams_overrides(json.dumps(KEYED), ["rome", "top"]) == KEYED
    assert hparams_overrides(json.dumps(KEYED), ["rome"]) == {"rome": {"layer": 4}}
    assert hparams_overrides(json.dumps(KEYED), ["memit"]) == {"memit": {}}
    assert hparams_overrides(json.dumps({"rome": 3, "top": {}}), ["top"]) == {"top": {}}
    with pytest.raises(ValueError, match="overrides of 'rome' must be a JSON object"):
        hparams_overrides(json.dumps({"rome": 3}), ["rome"])


def test_a_flat_object_overrides_the_main_methods():
    assert hparams_overrides('{"layer": 4}', ["rome"]) == {"rome": {"layer": 4}}
    assert hparams_overrides('{"v_lr": 0.1}', ["top", "rome"], flat_to=["top"]) == {"top": {"v_lr": 0.1}, "rome": {}}
    assert hparams_overrides('{"v_lr": 0.1}', ["rome", "top"], flat_to=["rome", "top"]) == {
        "rome": {"v_lr": 0.1}, "top": {"v_lr": 0.1}}
    with pytest.raises(ValueError, match="keyed by method"):
        hparams_overrides('{"layer": 4}', ["rome", "top"])


def test_no_object_or_an_empty_one_overrides_nothing(tmp_path):
    assert hparams_overrides(None, ["rome", "top"]) == {"rome": {}, "top": {}}
    assert hparams_overrides("{}", ["rome", "top"]) == {"rome": {}, "top": {}}
    path = tmp_path / "hp.json"
    path.write_text(json.dumps(KEYED))
    assert hparams_overrides(str(path), ["top"]) == {"top": {"rel_feat_layer": 2}}
    with pytest.raises(ValueError, match="--hparams must be a JSON object"):
        hparams_overrides("[1]", ["rome"])


def test_a_long_inline_object_is_read_inline_and_not_as_a_path():
    long = {"top": {"kl_prompt": "{} is a" + " x" * 200, "v_lr": 0.1}}  # longer than a file name may be
    assert hparams_overrides(json.dumps(long), ["top"]) == long
    with pytest.raises(UsageError, match=r"--hparams: '(x){300}' \(not an existing file either\) is not JSON"):
        hparams_overrides("x" * 300, ["top"])


def test_a_method_outside_the_presets_can_be_keyed():
    assert hparams_overrides('{"shift": {"layer": 1}}', ["shift"]) == {"shift": {"layer": 1}}


def test_resolve_applies_the_overrides_to_the_preset(tiny_hooked):
    preset = get_preset("rome", None)
    hp = resolve_hparams("rome", tiny_hooked, {"v_num_grad_steps": 3}, model_name="smollm2")
    assert hp == preset.replace(v_num_grad_steps=3)
    assert resolve_hparams("rome", tiny_hooked, {}, model_name="smollm2") == preset
    with pytest.raises(ValueError, match="nope"):
        resolve_hparams("rome", tiny_hooked, {"nope": 1})


def test_parse_ints_and_methods():
    assert parse_ints("2, 3", "--las") == [2, 3] and parse_ints(None, "--las") is None
    with pytest.raises(ValueError, match="--las"):
        parse_ints("2,x", "--las")
    assert parse_methods(" rome, top ") == ["rome", "top"]
    with pytest.raises(ValueError, match="'bogus'"):
        parse_methods("rome,bogus")


def test_help_documents_the_hparams_format_once(capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "--hparams JSON" in text and '{"rome": {"layer": 4}' in text
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {"edit", "compare", "eval", "merge", "sequential", "saliency", "trace", "rie",
                                "independence", "sweep", "figures"}
    assert text.count("--hparams JSON") == 1

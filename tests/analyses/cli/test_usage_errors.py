"""Every wrong flag or file is one line on stderr naming the flag and the value, with exit status 2,
and the checks that need no model run before any model loads."""

import json

import pytest

from toplens.analyses.cli import main

from tests.analyses.cli.conftest import REQUEST


@pytest.fixture
def no_load(monkeypatch):
    """The CLI's loader, replaced by one that fails the test when called."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr("toplens.analyses.cli.common.load_model", refuse)


def _one_line_error(capsys, command: str, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"toplens {command}: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _file(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _cases(tmp: str):
    """(argv, the flag named, the value named); ``tmp`` is an existing folder with a file ``f.txt``."""
    file, missing = f"{tmp}/f.txt", f"{tmp}/missing/x"
    hp = lambda d: ["--hparams", json.dumps(d)]  # noqa: E731
    return [
        (["eval", "--out", file], "--out", file),
        (["eval", "--out", f"{file}/sub"], "--out", file),
        (["eval", "--out", tmp, "--stopwords", missing], "--stopwords", missing),
        (["eval", "--out", tmp, "--stopwords", tmp], "--stopwords", tmp),
        (["eval", "--out", tmp, "--top-k", "0"], "--top-k", "got 0"),
        (["eval", "--out", tmp, "--limit", "0"], "--limit", "got 0"),
        (["eval", "--out", tmp, "--generation-tokens", "-1"], "--generation-tokens", "got -1"),
        (["eval", "--out", tmp, "--seed", "-3"], "--seed", "got -3"),
        (["eval", "--out", tmp, "--data", missing], "--data", missing),
        (["eval", "--out", tmp, *hp({"v_num_grad_steps": 20.5})], "--hparams", "v_num_grad_steps"),
        (["edit", *REQUEST, "--save", f"{missing}/edit.safetensors"], "--save", missing),
        (["edit", *REQUEST, "--save", tmp], "--save", tmp),
        (["edit", *REQUEST, "--layer", "-1"], "--layer", "got -1"),
        (["edit", *REQUEST, "--method", "bogus"], "--method", "'bogus'"),
        (["edit", *REQUEST, *hp({"mom2_adjustment": "false"})], "--hparams", "'false'"),
        (["edit", *REQUEST, *hp({"context_lengths": [[0, 5]]})], "--hparams", "context_lengths"),
        (["edit", *REQUEST, *hp({"v_lr": 1e30})], "--hparams", "1e+30"),
        (["edit", *REQUEST, "--hparams", "{layer: 4"], "--hparams", "{layer: 4"),
        (["edit", *REQUEST, "--hparams", f"{tmp}/hp.json"], "--hparams", "hp.json"),
        (["edit", *REQUEST, "--target", "   "], "--target", "'   '"),
        (["edit", "--prompt", "{} plays", "--subject", "Miles Davis"], "--target", "missing"),
        (["edit", "--requests", missing], "--requests", missing),
        (["edit", *REQUEST, "--model", "/nonexistent"], "--model", "'/nonexistent'"),
        (["saliency", "--steps", "0"], "--steps", "got 0"),
        (["saliency", "--stages", "0"], "--stages", "'0'"),
        (["saliency", "--out", file], "--out", file),
        (["trace", "--samples", "0"], "--samples", "got 0"),
        (["trace", "--window", "0"], "--window", "got 0"),
        (["trace", "--noise-std", "-1"], "--noise-std", "got -1"),
        (["trace", "--noise-std", "nan"], "--noise-std", "got nan"),
        (["trace", "--method", "rome", *hp({"layer": -2})], "--hparams", "RomeHparams.layer"),
        (["rie", "--n", "0"], "--n", "got 0"),
        (["rie", "--out", file], "--out", file),
        (["sweep", "--las", "3,-1"], "--las", "'3,-1'"),
        (["sweep", "--n", "0"], "--n", "got 0"),
        (["figures", "--out", tmp, "--eval-dir", missing], "--eval-dir", missing),
        (["figures", "--out", tmp, "--samples", "0"], "--samples", "got 0"),
        (["independence", "--n-random", "-1"], "--n-random", "got -1"),
        (["independence", "--model", "/nonexistent"], "--model", "'/nonexistent'"),
    ]


@pytest.mark.parametrize("index", range(len(_cases("T"))), ids=[f"{c[0][0]} {c[1]}" for c in _cases("T")])
def test_a_bad_flag_is_one_line_before_the_model_loads(index, tmp_path, no_load, capsys):
    (tmp_path / "f.txt").write_text("x")
    argv, flag, value = _cases(str(tmp_path))[index]
    assert main(argv) == 2
    _one_line_error(capsys, argv[0], flag, value)


def test_a_bad_request_in_the_requests_file_is_one_line(tmp_path, no_load, capsys):
    items = [{"prompt": "{} plays the", "subject": "Miles Davis", "target_new": {}}]
    path = _file(tmp_path, "requests.json", items)
    assert main(["edit", "--requests", path]) == 2
    _one_line_error(capsys, "edit", "--requests", "item 0", "target_new", "{}")
    assert main(["edit", "--requests", _file(tmp_path, "broken.json", "[{")]) == 2
    _one_line_error(capsys, "edit", "--requests", "broken.json")


def test_an_unknown_model_says_what_was_looked_for(no_load, capsys):
    assert main(["edit", *REQUEST, "--model", "/nonexistent", "--backend", "hooked"]) == 2
    err = _one_line_error(capsys, "edit", "--model: model '/nonexistent' is neither an existing path nor")
    assert len(err) < 400  # not TransformerLens' list of every model name
    assert main(["edit", *REQUEST, "--model", "no-such-model", "--backend", "hooked"]) == 2
    _one_line_error(capsys, "edit", "'no-such-model'", "neither an existing path nor a model TransformerLens names")
    assert main(["edit", *REQUEST, "--model", "./no/such/folder", "--backend", "bridge"]) == 2
    _one_line_error(capsys, "edit", "'./no/such/folder'", "neither an existing path nor")


def test_a_data_file_that_is_not_a_dataset_names_the_flag(tmp_path, no_load, capsys):
    path = _file(tmp_path, "data.json", "{not json")
    assert main(["rie", "--data", path]) == 2
    _one_line_error(capsys, "rie", "--data", "data.json")


LONG = ["--prompt", "{} plays the" + " trumpet and the guitar" * 40, "--subject", "Miles Davis",
        "--target", " Paris", "--target-true", " trumpet"]


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
@pytest.mark.parametrize("command", [["edit", "--method", "rome"], ["trace", "--kind", "mlp"]])
def test_a_prompt_longer_than_the_context_is_one_line(request, name, command, toplens):
    model = request.getfixturevalue(name)
    status, _, err = toplens([*command, *LONG], model=model)
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"toplens {command[0]}: error: --prompt: ") and "128 tokens (cfg.n_ctx)" in err


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
def test_a_prompt_that_fits_only_without_its_context_templates_names_the_template(request, name, toplens):
    model = request.getfixturevalue(name)
    prompt = "{} plays the" + " trumpet and the guitar" * 20  # 85 tokens; the templates add about 60
    argv = ["edit", "--method", "rome", "--prompt", prompt, "--subject", "Miles Davis", "--target", " Paris",
            "--hparams", json.dumps({"layer": 1, "context_lengths": [[2, 60]]})]
    status, _, err = toplens(argv, model=model)
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("toplens edit: error: --prompt: EditRequest.prompt with context template ")
    assert "128 tokens (cfg.n_ctx)" in err


@pytest.mark.parametrize("name", ["tiny_hooked", "tiny_bridge"])
def test_a_request_of_a_batch_longer_than_the_context_names_its_item(request, name, tmp_path, toplens):
    items = [{"prompt": "{} plays the", "subject": "Miles Davis", "target_new": {"str": "Paris"}},
             {"prompt": LONG[1], "subject": "Miles Davis", "target_new": {"str": "Paris"}}]
    argv = ["edit", "--method", "memit", "--requests", _file(tmp_path, "requests.json", items)]
    status, _, err = toplens(argv, model=request.getfixturevalue(name))
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("toplens edit: error: --requests item 1: the filled prompt with target_new is ")
    assert "more than the model's context of 128 tokens" in err

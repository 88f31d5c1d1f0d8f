"""The shared test helpers of tests/conftest.py: the shared-data rule (skip locally, fail under
CI), the `bridge` marker by the model a test uses, and param_hash."""

from __future__ import annotations

import pytest
import torch

import tests.conftest as conftest
from tests.conftest import HOOKED_AVAILABLE, param_hash, require_shared_data

from toplens import ModelAdapter


def test_missing_shared_data_skips_locally(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no-such-file\.json is not present"):
        require_shared_data("no-such-file.json")


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_missing_shared_data_fails_under_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"no-such-file\.json is not present.*under CI"):
        require_shared_data("no-such-file.json")


@pytest.mark.parametrize("ci", ["true", None])
def test_present_shared_data_is_returned(monkeypatch, tmp_path, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path)
    (tmp_path / "facts.json").write_text("[]")
    assert require_shared_data("facts.json") == tmp_path / "facts.json"


def test_the_marker_follows_a_fixture_of_that_backend(request, tiny_bridge):
    assert request.node.get_closest_marker("bridge") is not None


@pytest.mark.parametrize("name", ["tiny_bridge_llama"])
def test_the_marker_follows_a_parameter_naming_such_a_fixture(request, name):
    assert request.node.get_closest_marker("bridge") is not None


def test_the_parametrized_tiny_model_is_marked_by_its_backend(request, tiny_model):
    marked = request.node.get_closest_marker("bridge") is not None
    assert marked == (ModelAdapter(tiny_model).backend == "bridge")


@pytest.mark.skipif(not HOOKED_AVAILABLE, reason="this TransformerLens has no HookedTransformer")
def test_a_hooked_only_test_is_left_unmarked(request, tiny_hooked):
    assert request.node.get_closest_marker("bridge") is None


class _Item:
    """What pytest_collection_modifyitems reads of a collected test, and the markers it adds."""

    def __init__(self, fixtures=(), params=None, name="test_something"):
        self.fixturenames, self.originalname, self.name = list(fixtures), name, name
        self.callspec = None if params is None else type("CallSpec", (), {"params": params})()
        self.markers = []

    def add_marker(self, marker):
        self.markers.append(marker.name)


@pytest.mark.parametrize("hooked", [True, False])
def test_marking_by_the_models_used_and_skipping_what_needs_a_missing_hooked_transformer(monkeypatch, hooked):
    monkeypatch.setattr(conftest, "HOOKED_AVAILABLE", hooked)
    items = {"bridge fixture": _Item(["tiny_bridge_llama"]), "hooked fixture": _Item(["tiny_hooked"]),
             "bridge param": _Item(["tiny_model"], {"tiny_model": "tiny_bridge"}),
             "hooked param": _Item(["request"], {"backend": "hooked"}),
             "named": _Item(name="test_the_bridge_takes_paths"), "neither": _Item(["tmp_path"])}
    conftest.pytest_collection_modifyitems(None, list(items.values()))
    marks = {what: item.markers for what, item in items.items()}
    missing = [] if hooked else ["skip"]
    assert marks == {"bridge fixture": ["bridge"], "hooked fixture": missing, "bridge param": ["bridge"],
                     "hooked param": missing, "named": ["bridge"], "neither": []}


def _flip_one_element(tensor: torch.Tensor) -> None:
    flat = tensor.data.view(-1)
    flat[0] = flat[0] + 1


@pytest.mark.parametrize("which", ["first", "last"])
def test_param_hash_sees_any_parameter_not_only_w_out(tiny_model, which):
    before = param_hash(tiny_model)
    assert param_hash(ModelAdapter(tiny_model)) == before  # a model or its adapter
    name, param = list(tiny_model.named_parameters())[0 if which == "first" else -1]
    saved = param.detach().clone()
    try:
        with torch.no_grad():
            _flip_one_element(param)
        assert param_hash(tiny_model) != before, name
    finally:
        with torch.no_grad():
            param.copy_(saved)
    assert param_hash(tiny_model) == before


@pytest.mark.skipif(not HOOKED_AVAILABLE, reason="this TransformerLens has no HookedTransformer")
def test_param_hash_sees_buffers(tiny_hooked_llama):
    before = param_hash(tiny_hooked_llama)
    buffer = dict(tiny_hooked_llama.named_buffers())["blocks.0.attn.rotary_sin"]
    saved = buffer.clone()
    try:
        _flip_one_element(buffer)
        assert param_hash(tiny_hooked_llama) != before
    finally:
        buffer.copy_(saved)
    assert param_hash(tiny_hooked_llama) == before

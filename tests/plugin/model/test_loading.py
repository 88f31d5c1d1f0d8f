import inspect
import socket

import pytest
import torch

from toplens import ModelAdapter, load_model
from toplens.model.loading import bundled_model_file, resolve_backend

from tests.conftest import HOOKED_AVAILABLE, param_hash


def test_resolve_backend():
    assert resolve_backend("bridge") == "bridge"
    assert resolve_backend("auto") == ("hooked" if HOOKED_AVAILABLE else "bridge")
    with pytest.raises(ValueError, match="backend must be"):
        inspect.unwrap(resolve_backend)("tf")  # our own message, below the run-time type check


def test_bundled_file_is_found_without_importing_the_package():
    path = bundled_model_file()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


@pytest.mark.smollm
def test_bundled_bridge_loads_offline_fresh_and_unprocessed(monkeypatch, smollm_bridge):
    def refuse(*args, **kwargs):
        raise AssertionError("the bundled model must load without the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    model = load_model(backend="bridge")
    adapter = ModelAdapter(model)
    assert (adapter.n_layers, adapter.d_model, adapter.d_mlp) == (30, 576, 1536)
    assert model is not smollm_bridge
    assert not adapter.prepend_bos
    # a fresh copy: writing to it leaves the session's model alone
    session = param_hash(smollm_bridge)
    with torch.no_grad():
        adapter.w_out(0).zero_()
    assert param_hash(smollm_bridge) == session
    # unprocessed weights: the bridge's W_out is the checkpoint's own down_proj (a view of it)
    down = model.original_model.model.layers[3].mlp.down_proj.weight
    assert adapter.w_out(3).data_ptr() == down.data_ptr()

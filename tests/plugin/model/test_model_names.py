"""A model name that cannot be loaded is refused in one short sentence that says what was looked
for, before anything is loaded (not with TransformerLens' list of every model it knows)."""

import pytest

from toplens import load_model
from toplens.model.loading import ModelNotFoundError, check_model_name

from tests.conftest import BACKENDS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["/nonexistent", "./no/such/model", "~/no-such-folder-here"])
def test_a_missing_path_is_neither_a_path_nor_a_model(backend, name):
    with pytest.raises(ModelNotFoundError, match=f"model '{name}' is neither an existing path nor ") as err:
        load_model(name, backend)
    assert len(str(err.value)) < 200 and "\n" not in str(err.value)


@pytest.mark.skipif("hooked" not in BACKENDS, reason="this TransformerLens has no HookedTransformer")
def test_hooked_knows_transformer_lens_names_only(tmp_path):
    check_model_name("gpt2", "hooked")
    check_model_name("GPT2-small", "hooked")  # an alias, any case
    with pytest.raises(ModelNotFoundError, match="'gpt2-nope' is neither an existing path nor a model "
                                                 "TransformerLens names"):
        check_model_name("gpt2-nope", "hooked")
    with pytest.raises(ModelNotFoundError, match="is a path, and HookedTransformer loads only"):
        check_model_name(str(tmp_path), "hooked")


def test_the_bridge_takes_paths_and_hub_ids(tmp_path):
    check_model_name(str(tmp_path), "bridge")
    check_model_name("someone/some-model", "bridge")  # looked up on the hub when it loads
    for name in (None, "smollm2", "SmolLM2-135M-Instruct"):
        check_model_name(name, "bridge")

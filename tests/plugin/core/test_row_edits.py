"""Per-row edits: each row of a batch under ``per_row_edits`` runs the model with its own edit
folded in alone (up to float order), a row without an edit runs the unedited model exactly, and
the weights never change."""

import pytest
import torch

from toplens import ModelAdapter
from toplens.core.edits import LayerDelta, WeightEdit, apply_edit
from toplens.core.requests import EditRequest
from toplens.core.row_edits import per_row_edits
from toplens.model.identity import weights_digest
from tests.conftest import param_hash

REQUEST = EditRequest("{} plays the", "Miles Davis", " Paris", " trumpet")
PROMPTS = ["Miles Davis plays the", "The capital of France is", "Paris is a city in", "Miles Davis plays the"]


def _edits(adapter):
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: 0.5 * torch.randn(*shape, generator=g)  # noqa: E731
    one = WeightEdit("rome", (REQUEST,), (LayerDelta.rank_one(1, rand(adapter.d_mlp), rand(adapter.d_model)),))
    two = WeightEdit("memit", (REQUEST,), (LayerDelta(0, rand(adapter.d_mlp, 2), rand(2, adapter.d_model)),
                                            LayerDelta(1, rand(adapter.d_mlp, 2), rand(2, adapter.d_model))))
    return [one, two]


def test_each_row_is_the_model_with_its_edit_folded_in_alone(tiny_model):
    adapter = ModelAdapter(tiny_model)
    tokens = adapter.to_batch([adapter.tokenize(p) for p in PROMPTS])
    edits, rows = _edits(adapter), [0, 1, -1, 1]
    before = param_hash(tiny_model)
    with torch.no_grad():
        plain = adapter.logits(tokens)
        with adapter.hooks(per_row_edits(adapter, edits, rows)):
            batched = adapter.logits(tokens)
        alone = []
        for e in edits:
            with apply_edit(tiny_model, e, force=True):
                alone.append(adapter.logits(tokens))
    assert param_hash(tiny_model) == before
    for b, r in enumerate(rows):
        if r < 0:
            assert torch.equal(batched[b], plain[b])  # adding zero is exact
        else:
            assert not torch.allclose(alone[r][b], plain[b], atol=1e-3)  # the edit changes this row
            torch.testing.assert_close(batched[b], alone[r][b], atol=1e-4, rtol=1e-4)


def test_bad_rows_a_foreign_model_and_another_batch_size_are_refused(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    edits = _edits(adapter)
    with pytest.raises(ValueError, match=r"row_edit\[1\].*got 2"):
        per_row_edits(adapter, edits, [0, 2])
    with pytest.raises(ValueError, match=r"row_edit\[0\].*got True"):
        per_row_edits(adapter, edits, [True, 0])
    foreign = [WeightEdit(e.method, e.requests, e.deltas, model_digest="0" * 16) for e in edits]
    with pytest.raises(ValueError, match=r"edits\[0\] was computed on weights"):
        per_row_edits(adapter, foreign, [0, 1])
    assert per_row_edits(adapter, [WeightEdit(e.method, e.requests, e.deltas, model_digest=weights_digest(adapter))
                                   for e in edits], [0, 1])
    tokens = adapter.to_batch([adapter.tokenize(p) for p in PROMPTS])
    with pytest.raises(ValueError, match="batches of 2 rows; this forward has 4"), \
            adapter.hooks(per_row_edits(adapter, edits, [0, 1])):
        adapter.logits(tokens)

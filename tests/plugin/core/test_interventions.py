import pytest
"""Our hook factories compose with a user's own hooks in the same forward pass."""

import torch

from toplens import EditRequest, ModelAdapter, apply_edit, hook_name, rome
from toplens.core.interventions import add_vector, capture, patch_from
from toplens.editors.rome import RomeHparams


def test_add_vector_changes_only_chosen_positions(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    tokens = adapter.to_batch([adapter.tokenize("Paris is the capital of France")])
    store_plain, store_added = {}, {}
    name = hook_name("resid_post", 1)
    tiny_hooked.run_with_hooks(tokens, fwd_hooks=[capture(name, store_plain)])
    vec = torch.ones(adapter.d_model)
    tiny_hooked.run_with_hooks(tokens, fwd_hooks=[add_vector(name, vec, [0], [2]), capture(name, store_added)])
    diff = store_added[name] - store_plain[name]
    assert torch.allclose(diff[0, 2], vec) and diff[0, :2].abs().max() == 0 and diff[0, 3:].abs().max() == 0


def test_patch_clean_into_clean_is_identity(tiny_model):
    adapter = ModelAdapter(tiny_model)
    tokens = adapter.to_batch([adapter.tokenize("Rome is the capital of Italy")])
    name = hook_name("resid_pre", 2)
    store = {}
    with torch.no_grad():
        clean = tiny_model.run_with_hooks(tokens, fwd_hooks=[capture(name, store)])
        patched = tiny_model.run_with_hooks(tokens, fwd_hooks=[patch_from(name, store[name], torch.ones(tokens.shape))])
    torch.testing.assert_close(patched, clean)


def test_patch_from_with_leading_rows_patches_a_batch_that_has_fewer_rows_than_the_mask():
    act = torch.zeros(2, 3, 4)
    mask = torch.zeros(5, 3, dtype=torch.bool)
    mask[1, 2] = mask[4, 0] = True
    source = torch.arange(3 * 4.0).view(1, 3, 4)
    _, fn = patch_from("x", source, mask, leading_rows=True)
    out = fn(act, None)
    assert torch.equal(out[1, 2], source[0, 2]) and out.abs().sum() == source[0, 2].sum()
    _, strict = patch_from("x", source, mask)
    with pytest.raises(RuntimeError, match=r"size of tensor a \(5\) must match the size of tensor b \(2\)"):
        strict(act, None)


def test_edit_and_user_capture_hook_in_one_forward(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    request = EditRequest("Miles Davis plays the {}", "trumpet", " Italy")
    edit = rome.compute(tiny_hooked, request, RomeHparams(layer=1, mom2_adjustment=False, v_num_grad_steps=5,
                                                          context_lengths=((2, 3),)))
    tokens = adapter.to_batch([adapter.tokenize(request.text)])
    mine: dict = {}
    user_hook = capture(hook_name("value", 1), mine)
    before = tiny_hooked.run_with_hooks(tokens, fwd_hooks=[user_hook])
    value_before = mine["blocks.1.hook_mlp_out"].clone()
    with apply_edit(tiny_hooked, edit), tiny_hooked.hooks(fwd_hooks=[user_hook]):
        after = tiny_hooked(tokens)
    assert not torch.allclose(after, before)
    assert not torch.allclose(mine["blocks.1.hook_mlp_out"], value_before)  # the user saw the edited value

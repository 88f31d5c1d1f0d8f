import pytest
import torch

from tests.conftest import param_hash, unchecked

from toplens.analyses.tracing.causal_trace import causal_trace, indirect_effects
from toplens.core.corruption import (KINDS, answer_probs, clean_prob, corrupted_prob, embedding_std,
                                                 make_corruption, window_layers)
from toplens.analyses.tracing.grid import entry_layer, position_chunks
from toplens import EditRequest, ModelAdapter, hook_name, rome
from toplens.editors.rome import RomeHparams
from toplens.core.interventions import patch_from
from toplens.core.scoring import target_logprobs

# The subject first, so that positions before, inside and after it all occur.
PROMPT, SUBJECT, ANSWER = "{} plays the", "Miles Davis", " trumpet"
PROMPT_WITH_PREFIX = "The Eiffel Tower and {} plays the"


def _corruption(model, prompt=PROMPT, **kw):
    return make_corruption(ModelAdapter(model), prompt, SUBJECT, ANSWER, n_samples=kw.pop("n_samples", 3), **kw)


def test_restoring_every_residual_recovers_the_clean_probability(tiny_model):
    adapter = ModelAdapter(tiny_model)
    c = _corruption(tiny_model, PROMPT_WITH_PREFIX)
    names = [hook_name("resid_post", layer) for layer in range(adapter.n_layers)]
    clean = adapter.capture(c.tokens, names)
    everywhere = torch.ones(c.n_samples, c.n_positions, dtype=torch.bool)
    patches = [patch_from(name, state, everywhere) for name, state in zip(names, clean)]
    restored = float(answer_probs(adapter, c, patches).mean())
    base = corrupted_prob(adapter, c)
    assert abs(base - clean_prob(adapter, c)) > 1e-6  # the corruption does something
    assert restored - base == pytest.approx(clean_prob(adapter, c) - base, abs=1e-5)


def test_last_layer_last_position_cell_is_the_full_effect(tiny_model):
    result = causal_trace(tiny_model, PROMPT, SUBJECT, ANSWER, kind="resid", n_samples=3)
    full = result.clean_prob - result.corrupted_prob
    assert float(result.effects.values[-1, -1]) == pytest.approx(full, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_grid_equals_one_cell_at_a_time(tiny_model, kind):
    c = _corruption(tiny_model, PROMPT_WITH_PREFIX)
    # max_rows 7 -> two cells per forward: chunks straddle layers and start at different blocks
    batched = indirect_effects(tiny_model, c, kind, window=2, max_rows=7)
    reference = indirect_effects(tiny_model, c, kind, window=2, batched=False)
    assert batched.shape == (ModelAdapter(tiny_model).n_layers, c.n_positions)
    assert reference.abs().max() > 1e-6
    torch.testing.assert_close(batched, reference, atol=1e-6, rtol=1e-4)


def test_prefix_cache_path_equals_the_masked_full_sequence_path(tiny_hooked_llama):
    c = _corruption(tiny_hooked_llama, PROMPT_WITH_PREFIX)
    for kind in KINDS:
        cached = indirect_effects(tiny_hooked_llama, c, kind, window=2, max_rows=7)
        masked = indirect_effects(tiny_hooked_llama, c, kind, window=2, max_rows=7, use_prefix=False)
        assert masked.abs().max() > 1e-6
        torch.testing.assert_close(cached, masked, atol=1e-6, rtol=1e-4)


def test_hooked_forwards_run_only_the_positions_from_the_restored_one(tiny_hooked_llama):
    """With the cache path a batched forward sees positions p.. only; without it, all of them."""
    c = _corruption(tiny_hooked_llama, PROMPT_WITH_PREFIX)
    lengths: list[int] = []

    def watch(act, hook):
        lengths.append(act.shape[1])

    name = hook_name("resid_post", ModelAdapter(tiny_hooked_llama).n_layers - 1)
    with tiny_hooked_llama.hooks(fwd_hooks=[(name, watch)]):
        indirect_effects(tiny_hooked_llama, c, "resid", base_prob=0.0)
    subject_start = c.positions.subject_start
    # the full-length forwards are the clean and corrupted captures that every trace makes first
    assert set(lengths) - {c.n_positions} == {c.n_positions - p for p in range(subject_start, c.n_positions)}
    lengths.clear()
    with tiny_hooked_llama.hooks(fwd_hooks=[(name, watch)]):
        indirect_effects(tiny_hooked_llama, c, "resid", base_prob=0.0, use_prefix=False)
    assert set(lengths) == {c.n_positions}


def test_position_chunks_group_by_position_in_joining_order_and_cover_every_cell_once():
    cells = [(layer, position) for layer in range(12) for position in range(4)]
    todo = [j for j, (_, p) in enumerate(cells) if p >= 1]
    joins = [max(0, layer - 2) for layer, _ in cells]
    chunks = position_chunks(cells, todo, 5, joins)
    assert sorted(j for chunk in chunks for j in chunk) == sorted(todo)
    assert [len(chunk) for chunk in chunks] == [5, 5, 2] * 3
    for chunk in chunks:
        assert len({cells[j][1] for j in chunk}) == 1  # one position per run
        assert [joins[j] for j in chunk] == sorted(joins[j] for j in chunk)


def test_entry_layer_skips_the_block_a_restoration_writes_into():
    assert entry_layer("resid", 7, 30, 10) == 8
    assert entry_layer("resid", 29, 30, 10) == 30  # joins after the last block: only the unembedding runs
    assert entry_layer("mlp", 7, 30, 10) == 3 and entry_layer("mlp", 2, 30, 10) == 1
    assert entry_layer("attn", 7, 30, 10) == 2


def test_suffix_rows_join_the_batch_at_their_entry_layer(tiny_hooked_llama):
    """Cells at the last position: block b runs only the rows of cells restored below it."""
    adapter = ModelAdapter(tiny_hooked_llama)
    c = _corruption(tiny_hooked_llama, PROMPT_WITH_PREFIX)
    rows: dict[int, list[int]] = {}

    def watch(act, hook):
        if act.shape[1] == 1:  # the suffix forwards (the captures see every position)
            rows.setdefault(hook.layer(), []).append(act.shape[0])

    names = [hook_name("resid_post", layer) for layer in range(adapter.n_layers)]
    with tiny_hooked_llama.hooks(fwd_hooks=[(name, watch) for name in names]):
        indirect_effects(tiny_hooked_llama, c, "resid", positions=[c.last], base_prob=0.0)
    assert rows == {b: [b * c.n_samples] for b in range(1, adapter.n_layers)}


def test_cells_before_the_subject_have_no_effect(tiny_hooked):
    c = _corruption(tiny_hooked, PROMPT_WITH_PREFIX)
    before = list(range(c.positions.subject_start))
    assert before
    reference = indirect_effects(tiny_hooked, c, "resid", positions=before, batched=False)
    assert reference.abs().max() < 1e-6
    assert torch.equal(indirect_effects(tiny_hooked, c, "resid", positions=before), torch.zeros_like(reference))


def test_same_seed_same_numbers_other_seed_other_noise(tiny_model):
    a = causal_trace(tiny_model, PROMPT, SUBJECT, ANSWER, kind="mlp", n_samples=2, window=2, seed=3)
    b = causal_trace(tiny_model, PROMPT, SUBJECT, ANSWER, kind="mlp", n_samples=2, window=2, seed=3)
    assert torch.equal(a.effects.values, b.effects.values) and a.corrupted_prob == b.corrupted_prob
    assert not torch.equal(_corruption(tiny_model, seed=3).noise, _corruption(tiny_model, seed=4).noise)


def test_noise_is_three_embedding_stds_on_the_subject_only(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    c = _corruption(tiny_hooked, PROMPT_WITH_PREFIX, n_samples=50)
    subject = list(c.positions.subject_span)
    ids = [c.positions.tokens[i] for i in subject]
    expected = 3 * float(adapter.embedding_matrix()[ids].std())
    assert c.noise_std == pytest.approx(expected)
    assert embedding_std(adapter, ids) == pytest.approx(expected / 3)
    outside = [i for i in range(c.n_positions) if i not in subject]
    assert torch.equal(c.noise[:, outside], torch.zeros_like(c.noise[:, outside]))
    assert float(c.noise[:, subject].std()) == pytest.approx(expected, rel=0.1)


def test_window_is_centered_and_clipped_as_in_rome():
    assert window_layers(0, 30, "mlp", 10) == range(0, 5)
    assert window_layers(15, 30, "attn", 10) == range(10, 20)
    assert window_layers(29, 30, "mlp", 10) == range(24, 30)
    assert window_layers(7, 30, "mlp", 3) == range(6, 9)
    assert window_layers(7, 30, "resid", 10) == range(7, 8)


def test_result_labels_and_json(tiny_hooked):
    result = causal_trace(tiny_hooked, PROMPT, SUBJECT, ANSWER, kind="attn", n_samples=2, window=2)
    c = _corruption(tiny_hooked)
    assert list(result.effects.roles)[c.positions.last_subject] == "last_subject"
    assert list(result.effects.roles)[-1] == "last_relation"
    data = result.to_json()
    assert data["kind"] == "attn" and len(data["indirect_effect"]) == 4
    assert data["peak"]["ie"] == pytest.approx(float(result.effects.values.max()))
    assert result.clean_prob == pytest.approx(float(target_logprobs(tiny_hooked, ["Miles Davis plays the"],
                                                                    [ANSWER])[0][0].exp()), rel=1e-5)


def test_user_hooks_still_fire_and_a_harmless_one_changes_nothing(tiny_model):
    calls = []
    plain = causal_trace(tiny_model, PROMPT, SUBJECT, ANSWER, kind="resid", n_samples=2)
    with tiny_model.hooks(fwd_hooks=[(hook_name("resid_post", 3), lambda act, hook: calls.append(act.shape[0]))]):
        hooked = causal_trace(tiny_model, PROMPT, SUBJECT, ANSWER, kind="resid", n_samples=2)
    assert calls
    torch.testing.assert_close(hooked.effects.values, plain.effects.values, atol=1e-7, rtol=0)


def test_traces_an_edited_model_and_leaves_it_as_it_was(tiny_hooked):
    request = EditRequest("Miles Davis plays the {}", "trumpet", " Paris", " France")
    hp = RomeHparams(layer=1, v_num_grad_steps=8, mom2_adjustment=False)
    before = causal_trace(tiny_hooked, request.prompt, request.subject, request.target_new, kind="mlp", n_samples=2)
    weights = param_hash(tiny_hooked)
    with rome.apply(tiny_hooked, request, hp, templates=("{}",)):
        after = causal_trace(tiny_hooked, request.prompt, request.subject, request.target_new, kind="mlp",
                             n_samples=2)
    assert after.clean_prob > 2 * before.clean_prob
    assert param_hash(tiny_hooked) == weights


def test_bad_inputs_name_the_field(tiny_hooked):
    c = _corruption(tiny_hooked)
    with unchecked(), pytest.raises(ValueError, match="kind"):  # our message, below the type check
        causal_trace(tiny_hooked, PROMPT, SUBJECT, ANSWER, kind="mlps")
    with pytest.raises(ValueError, match="layers"):
        indirect_effects(tiny_hooked, c, "resid", layers=[4])
    with pytest.raises(ValueError, match="positions"):
        indirect_effects(tiny_hooked, c, "resid", positions=[-1])
    with pytest.raises(ValueError, match="window"):
        indirect_effects(tiny_hooked, c, "mlp", window=0)
    with pytest.raises(ValueError, match="n_samples"):
        _corruption(tiny_hooked, n_samples=0)

"""sample_rows: every row draws from its own stream, so its text never depends on its batch; the
generation stepper's logits are the full forward's on both backends."""

import pytest
import torch

from toplens import ModelAdapter, hook_name
from toplens.model.sampling import prompt_seed, sample_rows


def _prompts(adapter):
    texts = ["Miles Davis plays the", "Nina Simone sings the", "Paris is in the"]
    seqs = [adapter.tokenize(t) for t in texts]
    n = min(len(s) for s in seqs)
    return [s[:n] for s in seqs]  # equal lengths, as generate groups them


def test_the_stepper_gives_the_full_forwards_last_logits(tiny_model):
    adapter = ModelAdapter(tiny_model)
    tokens = adapter.to_batch(_prompts(adapter)[:2])
    extra = torch.tensor([[5, 7], [11, 13]])
    with torch.no_grad():
        step = adapter.decoder(tokens)
        got = [step(None), step(extra[:, 0]), step(extra[:, 1])]
        want = [adapter.logits(torch.cat([tokens, extra[:, :i]], 1))[:, -1] for i in range(3)]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_a_rows_continuation_does_not_depend_on_the_rows_beside_it(tiny_model):
    adapter = ModelAdapter(tiny_model)
    prompts, seeds = _prompts(adapter), [3, 4, 5]
    together = sample_rows(adapter, prompts, 8, 5, seeds)
    alone = [sample_rows(adapter, [p], 8, 5, [s])[0] for p, s in zip(prompts, seeds)]
    assert together == alone
    assert all(row[: len(p)] == p and len(row) == len(p) + 8 for row, p in zip(together, prompts))
    assert sample_rows(adapter, prompts[:1], 8, 5, [3]) == sample_rows(adapter, prompts[:1], 8, 5, [3])
    others = {tuple(sample_rows(adapter, prompts[:1], 8, 5, [s])[0]) for s in range(6)}
    assert len(others) > 1  # the seed matters: the draws are not greedy


def _greedy(adapter, prompt, n):
    tokens = adapter.to_batch([prompt])
    with torch.no_grad():
        for _ in range(n):
            tokens = torch.cat([tokens, adapter.logits(tokens)[:, -1].argmax(-1, keepdim=True)], 1)
    return tokens.tolist()


def test_top_1_is_the_greedy_continuation_under_the_active_hooks(tiny_model):
    adapter = ModelAdapter(tiny_model)
    prompt = _prompts(adapter)[0]
    plain = _greedy(adapter, prompt, 4)
    assert sample_rows(adapter, [prompt], 4, 1, [0]) == plain == sample_rows(adapter, [prompt], 4, 1, [9])
    flip = [(hook_name("resid_post", adapter.n_layers - 1), lambda act, hook: -act)]
    with adapter.hooks(flip):
        hooked, want = sample_rows(adapter, [prompt], 4, 1, [0]), _greedy(adapter, prompt, 4)
    assert hooked == want != plain  # the hook acts on every step, cached or not


def test_sample_rows_refuses_what_it_cannot_draw(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    a, b = adapter.tokenize("Miles Davis plays the"), adapter.tokenize("Paris")
    with pytest.raises(ValueError, match=r"equal-length prompts and one seed per prompt; got prompt lengths"):
        sample_rows(adapter, [a, b], 2, 5, [0, 1])
    with pytest.raises(ValueError, match=r"lengths \[\d+\] and 1 seeds for 2 prompts"):
        sample_rows(adapter, [a, a], 2, 5, [0])
    with pytest.raises(ValueError, match="top_k must be a positive integer; got 0"):
        sample_rows(adapter, [a], 2, 0, [0])


def test_a_prompts_stream_is_fixed_by_the_seed_and_the_prompt():
    assert prompt_seed(0, "Paris is") == prompt_seed(0, "Paris is")
    assert len({prompt_seed(0, "Paris is"), prompt_seed(1, "Paris is"), prompt_seed(0, "Rome is")}) == 3

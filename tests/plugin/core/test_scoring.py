"""target_logprobs against an independent teacher-forced pass: each prompt alone, full logits."""

import pytest
import torch

from toplens import ModelAdapter
from toplens.core.scoring import target_logprobs, target_probability

PAIRS = [("Paris is the capital of", " France"), ("The trumpet", " is played by Miles Davis"),
         ("Miles Davis plays the", " trumpet and the piano")]


def _alone(adapter, prompt, target):
    prompt_ids = adapter.tokenize(prompt)
    full = adapter.tokenize(prompt + target)
    ids = full[len(prompt_ids):]
    with torch.no_grad():
        logp = adapter.model(torch.tensor([full], device=adapter.device))[0].float().log_softmax(-1)
    return torch.stack([logp[len(prompt_ids) - 1 + j, t] for j, t in enumerate(ids)]).cpu()


def test_batched_target_logprobs_equal_each_prompt_alone(tiny_model):
    """Batched, right-padded, unembedded only at the target positions: the same log-probs as a
    full forward of each prompt alone (to float rounding of the batched matmuls)."""
    adapter = ModelAdapter(tiny_model)
    got = target_logprobs(tiny_model, [p for p, _ in PAIRS], [t for _, t in PAIRS])
    for (prompt, target), lp in zip(PAIRS, got):
        want = _alone(adapter, prompt, target)
        assert lp.shape == want.shape and lp.shape[0] >= 1
        torch.testing.assert_close(lp, want, rtol=1e-4, atol=1e-4)
    assert target_probability(tiny_model, *PAIRS[0]) == pytest.approx(float(got[0].sum().exp()), rel=1e-5)


def test_no_prompts_give_no_logprobs(tiny_hooked):
    assert target_logprobs(tiny_hooked, [], []) == []

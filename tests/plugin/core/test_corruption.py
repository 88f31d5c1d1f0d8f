"""The corrupted run's restorations (``restored_probs``): sites batched in one forward equal each
site alone; a clean state restored where the noise never reached changes nothing; the last token's
state after the last block is the whole clean prediction."""

import pytest
import torch

from toplens import ModelAdapter
from toplens.core.corruption import answer_probs, clean_prob, make_corruption, restored_probs
from toplens.core.scoring import top_tokens

PROMPT, SUBJECT = "Q: Which instrument does {} play? A:", "Miles Davis"


def _corruption(adapter):
    answer = top_tokens(adapter, PROMPT.format(SUBJECT), 1)[0].token
    return make_corruption(adapter, PROMPT, SUBJECT, answer, n_samples=3, seed=0)


def test_sites_together_equal_each_site_alone(tiny_model):
    adapter = ModelAdapter(tiny_model)
    c = _corruption(adapter)
    sites = [(0, c.last), (1, c.positions.last_subject), (0, c.positions.last_subject), (1, c.last)]
    together = restored_probs(adapter, c, sites)
    alone = torch.cat([restored_probs(adapter, c, [site]) for site in sites])
    assert together.shape == (len(sites),) and len(set(together.tolist())) == len(sites)  # a mix-up would show
    assert torch.allclose(together, alone, atol=1e-6)
    with pytest.raises(ValueError, match="sites"):
        restored_probs(adapter, c, [])


def test_restoring_before_the_subject_or_the_final_state_bounds_the_effect(tiny_model):
    adapter = ModelAdapter(tiny_model)
    c = _corruption(adapter)
    before = c.positions.subject_span.start - 1  # causal: its state never sees the noise
    assert before >= 0
    last_block = adapter.n_layers - 1
    unmoved, whole = restored_probs(adapter, c, [(last_block, before), (last_block, c.last)])
    assert float(unmoved) == pytest.approx(float(answer_probs(adapter, c).mean()), abs=1e-6)
    assert float(whole) == pytest.approx(clean_prob(adapter, c), abs=1e-5)
    assert abs(clean_prob(adapter, c) - float(unmoved)) > 1e-4  # the noise moved P(answer): the test can fail

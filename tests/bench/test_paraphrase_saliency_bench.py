import json
import math

import pytest
import torch

from bench.paraphrase_saliency import grad_map, read, strong
from toplens import ModelAdapter
from toplens.core.scoring import target_logprobs
from tests.plugin.editors.test_top import REQUEST


def test_the_last_block_is_salient_only_where_the_answer_is_read(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    answer = REQUEST.target_new
    flags = [p.requires_grad for p in tiny_hooked.parameters()]
    grads, nll = grad_map(adapter, REQUEST.text, answer)
    n = len(adapter.tokenize(REQUEST.text))
    assert grads.shape == (adapter.n_layers, n) and bool((grads >= 0).all())
    assert float(grads[-1, -1]) > 0 and bool((grads[-1, :-1] == 0).all())  # the answer is read from the prompt's end on
    assert nll == pytest.approx(float(-target_logprobs(adapter, [REQUEST.text], [answer])[0].mean()), rel=1e-4)
    assert [p.requires_grad for p in tiny_hooked.parameters()] == flags
    assert all(p.grad is None for p in tiny_hooked.parameters())  # the weights took no gradient


def test_the_shares_are_read_at_the_edit_site_and_the_relation_site():
    grads = torch.zeros(6, 4)
    grads[1, 2], grads[4, 3], grads[0, 2], grads[5, 0] = 2.0, 1.0, 1.0, 4.0
    row = read(grads, subject_last=2, last=3, edit_layer=1, la=4)
    assert row["site_share"] == pytest.approx(0.25) and row["relation_share"] == pytest.approx(0.125)
    assert row["subject_share_to_l"] == pytest.approx(3 / 8)
    assert row["peaks"] == {"0..l": "last subject", "l+1..la": "last token", "la+1..": "other"}


def test_strong_cases_have_the_rewrite_above_one_half(tmp_path):
    lines = [{"case_id": i, "post": {"efficacy": {"outcomes": [{"nll_wanted": nll}]}}}
             for i, nll in enumerate([0.1, math.log(2) + 1e-6, 2.0, 0.69])]
    (tmp_path / "cases.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert strong(tmp_path) == {0, 3}

"""Positions by tokenizer family: GPT-2 byte-level BPE, sentencepiece (▁ + BOS), and SmolLM2's."""

import pytest

from toplens import ModelAdapter, RequestError, locate, target_ids

PROMPT, SUBJECT = "The mother tongue of {} is", "Danielle Darrieux"


def _decode(adapter, ids):
    return adapter.tokenizer.decode(ids)


def _check(adapter, bos: bool):
    pos = locate(adapter, PROMPT, SUBJECT)
    tokens = list(pos.tokens)
    assert tokens == adapter.tokenize(PROMPT.format(SUBJECT))
    assert (tokens[0] == adapter.bos_token_id) == bos
    subject_text = _decode(adapter, tokens[pos.subject_start: pos.last_subject + 1])
    assert subject_text.strip() == SUBJECT
    assert _decode(adapter, tokens[pos.last_relation:]).strip() == "is"
    assert pos.last_relation == len(tokens) - 1
    assert _decode(adapter, tokens[pos.last_subject + 1:]).strip() == "is"
    ids = target_ids(adapter, PROMPT.format(SUBJECT), " French")
    assert _decode(adapter, ids).strip() == "French"
    assert adapter.tokenize(PROMPT.format(SUBJECT) + " French") == tokens + ids


@pytest.mark.parametrize("bos", [False, True])
def test_gpt2_bpe_positions(tiny_hooked, bos):
    _check(ModelAdapter(tiny_hooked, prepend_bos=bos), bos=bos)


def test_bridge_positions_follow_tl_convention(tiny_bridge, tiny_bridge_llama):
    for model in (tiny_bridge, tiny_bridge_llama):
        adapter = ModelAdapter(model)
        assert adapter.prepend_bos == model.cfg.default_prepend_bos
        _check(adapter, bos=adapter.prepend_bos)


def test_sentencepiece_positions_with_bos(tiny_hooked_llama):
    adapter = ModelAdapter(tiny_hooked_llama)
    assert adapter.prepend_bos
    _check(adapter, bos=True)


def test_subject_at_start_of_prompt(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    pos = locate(adapter, "{} is the capital of France", "Paris")
    assert pos.subject_start == 0 and _decode(adapter, list(pos.tokens[: pos.last_subject + 1])) == "Paris"


def test_subject_merging_with_neighbours_is_an_error(tiny_hooked):
    adapter = ModelAdapter(tiny_hooked)
    with pytest.raises(RequestError, match="EditRequest.subject 'Par' is not found"):
        locate(adapter, "{}is the capital of France", "Par")


@pytest.mark.smollm
def test_smollm2_positions(smollm_bridge):
    adapter = ModelAdapter(smollm_bridge)
    assert not adapter.prepend_bos  # SmolLM2 adds no BOS
    _check(adapter, bos=False)
    pos = locate(adapter, PROMPT, SUBJECT)
    assert pos.subject_start == 4 and pos.last_subject == 8 and pos.last_relation == 9
    assert target_ids(adapter, PROMPT.format(SUBJECT), " Paris") == adapter.tokenize(" Paris")

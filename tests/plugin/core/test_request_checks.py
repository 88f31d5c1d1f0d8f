"""Requests that would silently edit the wrong thing: whitespace in the targets (normalized, with a
warning) and prompts longer than the model's context (refused before any work)."""

import logging
import re

import pytest
import torch

from toplens import EditRequest, RequestError, memit, rets, rome, top
from toplens.core.objective import rewrite_batch
from toplens.core.positions import PromptTooLongError, target_ids
from toplens.editors.memit import MemitHparams
from toplens.editors.rets import RetsHparams
from toplens.editors.rome import RomeHparams
from toplens.editors.top import TopHparams
from toplens.model import as_adapter

PROMPT, SUBJECT = "{} plays the", "Miles Davis"


@pytest.mark.parametrize("given, kept", [
    (" Paris ", " Paris"), (" Paris\n", " Paris"), ("\tParis", " Paris"), ("  New   York ", " New York"),
    ("Paris  ", "Paris"), (" Paris", " Paris"),
])
def test_target_whitespace_is_normalized_with_a_warning(given, kept, caplog):
    with caplog.at_level(logging.WARNING, logger="toplens.core.requests"):
        request = EditRequest(PROMPT, SUBJECT, given, given.replace("Paris", "Rome").replace("York", "Jersey"))
    assert request.target_new == kept and request.target_true == kept.replace("Paris", "Rome").replace("York",
                                                                                                       "Jersey")
    warned = [r.getMessage() for r in caplog.records]
    if given == kept:
        assert not warned
    else:
        assert f"EditRequest.target_new {given!r} normalized to {kept!r}" in warned[0]
        assert "EditRequest.target_true" in warned[1]


@pytest.mark.parametrize("field", ["target_new", "target_true"])
@pytest.mark.parametrize("value", ["", " ", "\n\t "])
def test_empty_targets_are_refused_naming_the_field(field, value):
    fields = {"prompt": PROMPT, "subject": SUBJECT, "target_new": " Paris", "target_true": " trumpet", field: value}
    message = f"EditRequest.{field} must not be empty or whitespace only; got {value!r}"
    with pytest.raises(RequestError, match=re.escape(message)):
        EditRequest(**fields)


def test_a_counterfact_target_without_its_string_is_refused():
    with pytest.raises(RequestError, match=r'requested_rewrite\.target_new must be a string or \{"str": \.\.\.\}; got'
                                           r" \{\}"):
        EditRequest.from_counterfact({"prompt": PROMPT, "subject": SUBJECT, "target_new": {}})
    assert EditRequest.from_counterfact({"prompt": PROMPT, "subject": SUBJECT, "target_new": {"str": "Paris "},
                                         "target_true": {"str": "trumpet"}}).target_new == " Paris"


def test_a_padded_target_optimizes_the_same_tokens_as_the_clean_one(tiny_model):
    """On both tokenizers (GPT-2 BPE and sentencepiece) and both backends: no whitespace token."""
    adapter = as_adapter(tiny_model)
    clean = target_ids(adapter, "Miles Davis plays the", " Paris")
    for padded in (" Paris ", " Paris\n", " Paris  "):
        raw = target_ids(adapter, "Miles Davis plays the", padded)
        request = EditRequest(PROMPT, SUBJECT, padded)
        assert target_ids(adapter, request.text, request.target_new) == clean
        assert raw != clean or padded.strip() == padded  # what the target was before it was normalized
    batch = rewrite_batch(adapter, EditRequest(PROMPT, SUBJECT, " Paris \n"), ("{}",), [])
    assert batch.target_ids.tolist() == clean


LONG = EditRequest(PROMPT + " trumpet and the guitar" * 40, SUBJECT, " Paris", " trumpet")
FITS = EditRequest(PROMPT + " trumpet and the guitar" * 15, SUBJECT, " Paris", " trumpet")  # 65 to 96 tokens
TEMPLATES = ("{}", "Paris is the capital of France. {}")
LONG_TEMPLATES = ("{}", "Paris is the capital of France." * 12 + " {}")  # 84 tokens more
HPARAMS = {"rome": RomeHparams(layer=1, v_num_grad_steps=2, mom2_adjustment=False),
           "top": TopHparams(layers=(1,), v_num_grad_steps1=2, v_num_grad_steps2=2, mom2_adjustment=False),
           "rets": RetsHparams(layer=1, v_num_grad_steps=2, mom2_adjustment=False),
           "memit": MemitHparams(layers=(1, 2), v_num_grad_steps=2, mom2_adjustment=False, mom2_update_weight=1.0)}
EDITORS = {"rome": rome, "top": top, "rets": rets, "memit": memit}


OPTIONS = {"rets": {"constraint_prompts": ()}}  # RETS's default constraint prompts are checked on their own


def _no_work(monkeypatch):
    """Fail the test when an optimization starts."""
    def refuse(*args, **kwargs):
        raise AssertionError("an optimization ran before the prompt lengths were checked")

    monkeypatch.setattr("toplens.core.value.optimize", refuse)


@pytest.mark.parametrize("method", EDITORS)
def test_a_prompt_longer_than_the_context_is_refused_before_any_work(method, tiny_model, monkeypatch):
    _no_work(monkeypatch)
    n_ctx = as_adapter(tiny_model).cfg.n_ctx
    with pytest.raises(PromptTooLongError, match=rf"EditRequest\.prompt with context template \d and target_new is "
                                                 rf"\d+ tokens, more than the model's context of {n_ctx} tokens"):
        EDITORS[method].compute(tiny_model, LONG, HPARAMS[method], templates=TEMPLATES, **OPTIONS.get(method, {}))


@pytest.mark.parametrize("method", EDITORS)
def test_the_longest_context_template_counts(method, tiny_model, monkeypatch):
    _no_work(monkeypatch)
    with pytest.raises(PromptTooLongError, match=r"context template 1 and target_new is \d+ tokens.*cfg\.n_ctx"):
        EDITORS[method].compute(tiny_model, FITS, HPARAMS[method], templates=LONG_TEMPLATES, **OPTIONS.get(method, {}))


def test_memit_checks_every_request_before_the_first_optimization(tiny_model, monkeypatch):
    _no_work(monkeypatch)
    short = EditRequest(PROMPT, SUBJECT, " Paris", " trumpet")
    with pytest.raises(PromptTooLongError, match="128 tokens"):
        memit.compute(tiny_model, [short, LONG], HPARAMS["memit"], templates=TEMPLATES)


def test_rets_checks_its_constraint_prompts(tiny_model, monkeypatch):
    _no_work(monkeypatch)
    short = EditRequest(PROMPT, SUBJECT, " Paris", " trumpet")
    with pytest.raises(PromptTooLongError, match=r"RETS's constraint prompt 1 is \d+ tokens"):
        rets.compute(tiny_model, short, HPARAMS["rets"], templates=TEMPLATES,
                     constraint_prompts=["Jimi Hendrix plays the", "Jimi Hendrix plays the guitar" * 30])


def test_the_kl_prompt_is_checked(tiny_model, monkeypatch):
    _no_work(monkeypatch)
    hp = HPARAMS["rome"].replace(kl_prompt="{} is a" + " guitar" * 150)
    with pytest.raises(PromptTooLongError, match=r"the KL prompt 0 with EditRequest\.subject is \d+ tokens"):
        rome.compute(tiny_model, EditRequest(PROMPT, SUBJECT, " Paris"), hp, templates=TEMPLATES)


def test_a_prompt_that_fits_still_edits(tiny_model):
    adapter = as_adapter(tiny_model)
    saved = adapter.w_out(1).detach().clone()
    edit = rome.compute(tiny_model, FITS, HPARAMS["rome"], templates=TEMPLATES)
    assert edit.layers == (1,) and torch.equal(adapter.w_out(1), saved)

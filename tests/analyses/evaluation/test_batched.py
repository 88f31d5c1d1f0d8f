"""measure_many: the records measured together, each under its own edit as per-row hooks, give
what measure gives with that edit folded in alone; the weights never change."""

import pytest

from toplens import EditRequest, apply_edit
from toplens.analyses.evaluation.batched import measure_many
from toplens.analyses.evaluation.evaluate import measure
from toplens.analyses.evaluation.records import Record
from toplens.editors import rome
from tests.conftest import param_hash
from tests.plugin.editors.test_rome import FAST

#: float order only: the NLLs of one prompt agree to this (float32 logits of a tiny model, summed
#: over a few target tokens, differ in the last bits between batch compositions and paddings)
NLL_TOLERANCE = 1e-4


def _record(case_id, subject, new):
    return Record(case_id, EditRequest("{} plays the", subject, new, " piano"),
                  paraphrase_prompts=(f"The instrument of {subject} is the", f"{subject} is known for the"),
                  neighborhood_prompts=("Jimi Hendrix plays the", "Yo-Yo Ma plays the"),
                  neighborhood_targets=(" guitar", " cello"),
                  relation_specific_prompts=(f"{subject} was born in", f"{subject} speaks"))


RECORDS = (_record(1, "Miles Davis", " trumpet"), _record(2, "Nina Simone", " violin"), _record(3, "Ray Charles", " drum"))


def _outcomes(measurement):
    return [o for name in ("efficacy", "generalization", "s_specificity", "r_specificity", "efficacy_at_1")
            for o in getattr(measurement, name).outcomes]


def _assert_same(batched, alone):
    """Measurements or CaseResults: the same prompts, NLLs within float order, outcomes off ties."""
    picked = lambda m: [(t.token_id, t.text) if t else None for t in getattr(m, "tokens", ())]  # noqa: E731
    assert picked(batched) == picked(alone)  # their probabilities agree to float order only
    a, b = _outcomes(batched), _outcomes(alone)
    assert [o.prompt for o in a] == [o.prompt for o in b] and a
    for x, y in zip(a, b, strict=True):
        assert x.nll_wanted == pytest.approx(y.nll_wanted, abs=NLL_TOLERANCE)
        assert x.nll_rival == pytest.approx(y.nll_rival, abs=NLL_TOLERANCE)
        if abs(y.nll_wanted - y.nll_rival) > 2 * NLL_TOLERANCE:  # an outcome may flip only on a tie
            assert x.success == y.success


def test_each_record_measured_together_is_the_record_measured_alone_under_its_edit(tiny_model):
    weights = param_hash(tiny_model)
    befores = [measure(tiny_model, r) for r in RECORDS]
    for together, alone in zip(measure_many(tiny_model, RECORDS), befores, strict=True):
        _assert_same(together, alone)
    edits = [rome.compute(tiny_model, r.request, FAST) for r in RECORDS]
    tokens = [b.tokens for b in befores]
    afters = []
    for record, edit, before in zip(RECORDS, edits, befores, strict=True):
        with apply_edit(tiny_model, edit):
            afters.append(measure(tiny_model, record, before.tokens))
    assert param_hash(tiny_model) == weights
    together = measure_many(tiny_model, RECORDS, edits, tokens)
    assert param_hash(tiny_model) == weights
    for batched, alone in zip(together, afters, strict=True):
        _assert_same(batched, alone)
    moved = [abs(x.nll_wanted - y.nll_wanted) for b, a in zip(together, befores) for x, y in
             zip(_outcomes(b), _outcomes(a))]
    assert max(moved) > 0.1  # the edits act: this is not the unedited model measured twice


def test_edits_and_tokens_need_one_entry_per_record(tiny_hooked):
    with pytest.raises(ValueError, match=r"one entry per record \(3\); got 1 edits and 3 token lists"):
        measure_many(tiny_hooked, RECORDS, [rome.compute(tiny_hooked, RECORDS[0].request, FAST)])


def test_prompts_sampled_together_under_their_own_edits_are_the_texts_of_each_edit_folded_in(tiny_model):
    from toplens.analyses.evaluation.evaluate import generate
    edits = [rome.compute(tiny_model, r.request, FAST) for r in RECORDS[:2]]
    prompts = ["Miles Davis plays the", "Nina Simone plays the", "Miles Davis is known for the", "Paris is"]
    prompt_edit = [0, 1, 0, -1]  # -1: the unedited model
    weights = param_hash(tiny_model)
    together = generate(tiny_model, prompts, n_tokens=5, seed=2, edits=edits, prompt_edit=prompt_edit)
    assert param_hash(tiny_model) == weights
    alone = []
    for prompt, e in zip(prompts, prompt_edit, strict=True):
        if e < 0:
            alone += generate(tiny_model, [prompt], n_tokens=5, seed=2)
            continue
        with apply_edit(tiny_model, edits[e]):
            alone += generate(tiny_model, [prompt], n_tokens=5, seed=2)
    assert list(together) == alone
    assert together != generate(tiny_model, prompts, n_tokens=5, seed=2)  # the edits act on the texts

"""ROME on the real bundled SmolLM2-135M-Instruct, on both backends: the edits really work."""

from __future__ import annotations

import json
import math

import pytest

from toplens.analyses.cli import main
from toplens.analyses.evaluation.samples import known_fact_requests
from toplens import EditRequest, ModelAdapter, apply_edit, rome
from toplens.editors.presets import get_preset
from toplens.core.scoring import target_probability
from toplens.core.templates import context_templates

from tests.conftest import BACKENDS, param_hash, require_shared_data

pytestmark = pytest.mark.smollm
DANIELLE = EditRequest("The mother tongue of {} is", "Danielle Darrieux", " English", " French")


def _model(request, backend):
    return request.getfixturevalue(f"smollm_{backend}")


@pytest.fixture(scope="module")
def danielle_edits(request):
    """The Danielle Darrieux ROME edit computed on each backend (shared by the tests below), from
    the same context templates: each backend draws its own (sampling is not bit-identical across
    backends), so the first backend's are given to both. In float32: under the preset's bfloat16
    autocast the two backends' different op orders move v* by about 5% (measured: 0.046), which
    would hide an adapter fault of that size; test_cli_edit_json covers the preset itself."""
    hp = get_preset("rome", None).replace(precision="float32")
    templates = context_templates(_model(request, BACKENDS[0]), hp.context_lengths)
    return {b: rome.compute(_model(request, b), DANIELLE, hp, templates=templates) for b in BACKENDS}


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_edit_json(backend, capsys):
    argv = ["edit", "--method", "rome", "--prompt", DANIELLE.prompt, "--subject", DANIELLE.subject,
            "--target", DANIELLE.target_new, "--target-true", DANIELLE.target_true, "--backend", backend, "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == backend and report["method"] == "rome" and report["layer"] == 5
    assert report["pre"]["p_true"] > report["pre"]["p_new"]
    assert report["post"]["p_new"] > report["post"]["p_true"]
    assert report["post"]["top5"][0]["token"] == " English"
    assert report["restored_bitexact"] is True and report["seconds"] > 0 and report["steps"] >= 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_known_facts_8_of_10(request, backend):
    path = require_shared_data("known_1000.json")
    model = _model(request, backend)
    before = param_hash(model)
    hp = get_preset("rome", None)
    successes = []
    for req in known_fact_requests(path, 10):
        with rome.apply(model, req, hp):
            successes.append(target_probability(model, req.text, req.target_new)
                             > target_probability(model, req.text, req.target_true))
    assert sum(successes) >= 8, successes
    assert param_hash(model) == before


@pytest.mark.skipif(len(BACKENDS) < 2, reason="HookedTransformer is not in this TransformerLens")
def test_backends_give_the_same_edit(request, danielle_edits):
    hooked, bridge = danielle_edits["hooked"], danielle_edits["bridge"]
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    assert rel(hooked.details.value.optimized, bridge.details.value.optimized) < 1e-2
    assert rel(hooked.deltas[0].delta, bridge.deltas[0].delta) < 1e-2
    tops = []
    for backend, edit in danielle_edits.items():
        model = _model(request, backend)
        with apply_edit(model, edit):
            tops.append(int(ModelAdapter(model).next_token_probs(DANIELLE.text).argmax()))
    assert tops[0] == tops[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_edit_generalizes_and_reverts(request, backend, danielle_edits):
    model = _model(request, backend)
    paraphrase = "Danielle Darrieux's mother tongue is"
    before = target_probability(model, paraphrase, " English")
    weights = param_hash(model)
    with apply_edit(model, danielle_edits[backend]):
        after = target_probability(model, paraphrase, " English")
    # the edit carries over to a paraphrase it was not optimized on: log P(o*) rises by over 1 nat
    # (measured on the hooked backend: P 0.126 -> 0.935, +2.0 nats)
    assert math.log(after) > math.log(before) + 1.0, (before, after)
    assert param_hash(model) == weights

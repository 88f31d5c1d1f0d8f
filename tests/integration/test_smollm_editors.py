"""TOP, RETS and MEMIT on the real bundled SmolLM2-135M-Instruct: the edits really work."""

from __future__ import annotations

import json
import math

import pytest
import torch

from toplens.analyses.cli import main
from toplens.analyses.evaluation.samples import known_fact_requests
from toplens import EditRequest, ModelAdapter, apply_edit, hook_name
from toplens.editors import rets, top
from toplens.core.interventions import patch_from, set_vectors
from toplens.editors.presets import get_preset
from toplens.core.scoring import target_probability

from tests.conftest import BACKENDS, param_hash, require_shared_data

pytestmark = pytest.mark.smollm
DANIELLE = EditRequest("The mother tongue of {} is", "Danielle Darrieux", " English", " French")


def _model(request, backend):
    return request.getfixturevalue(f"smollm_{backend}")


def _succeeds(model, req: EditRequest) -> bool:
    return target_probability(model, req.text, req.target_new) > target_probability(model, req.text, req.target_true)


@pytest.mark.parametrize("backend", BACKENDS)
def test_top_edit_takes_and_reverts(request, backend):
    model = _model(request, backend)
    before = param_hash(model)
    hp = get_preset("top", None)
    with top.apply(model, DANIELLE, hp) as handle:
        assert _succeeds(model, DANIELLE)
        summary = handle.edits[0].details.summary()
    assert summary["la"] == hp.layers[0] + hp.rel_feat_layer and summary["stage1_steps"] >= 1
    assert param_hash(model) == before


def test_top_stage1_relation_feature_predicts_the_target(smollm_hooked):
    """After stage 1 the unedited model with h*_r patched in at la predicts o*; after the fold the
    edited model predicts o* through h_r alone."""
    adapter = ModelAdapter(smollm_hooked)
    hp = get_preset("top", None)
    edit = top.compute(smollm_hooked, DANIELLE, hp)
    info = edit.details.layers[0]
    tokens = adapter.to_batch([adapter.tokenize(DANIELLE.text)])
    last = tokens.shape[1] - 1
    patch = set_vectors(hook_name("resid_post", info.la), info.h_star[None], [0], [last])
    with torch.no_grad(), adapter.hooks([patch]):
        top1 = int(adapter.logits(tokens)[0, last].argmax())
    assert adapter.model.to_string([top1]) == DANIELLE.target_new
    assert info.stage1_target_prob > 0.9
    # after the fold the edited model's h_r at la carries o* by itself: with every other position
    # reset to its clean residual at la, o* is still the top token (the preset's stage 2 resets
    # nothing, stage2_reset="none", so this is a property of its edit, not its objective)
    (clean,) = adapter.capture(tokens, [hook_name("resid_post", info.la)])
    others = torch.ones(clean.shape[:2], dtype=torch.bool)
    others[0, last] = False
    with apply_edit(smollm_hooked, edit), torch.no_grad():
        with adapter.hooks([patch_from(hook_name("resid_post", info.la), clean, others)]):
            top1 = int(adapter.logits(tokens)[0, last].argmax())
        assert _succeeds(smollm_hooked, DANIELLE)
    assert adapter.model.to_string([top1]) == DANIELLE.target_new


def test_rets_edit_takes_and_reverts(smollm_hooked):
    before = param_hash(smollm_hooked)
    with rets.apply(smollm_hooked, DANIELLE, get_preset("rets", None)):
        assert _succeeds(smollm_hooked, DANIELLE)
    assert param_hash(smollm_hooked) == before


@pytest.mark.bridge  # the CLI loads the bundled model on BACKENDS[-1], the bridge
def test_memit_batch_from_a_requests_file(tmp_path, capsys):
    path = require_shared_data("known_1000.json")
    rewrites = [{"prompt": r.prompt, "subject": r.subject, "target_new": {"str": r.target_new.strip()},
                 "target_true": {"str": r.target_true.strip()}} for r in known_fact_requests(path, 3)]
    file = tmp_path / "requests.json"
    file.write_text(json.dumps(rewrites))
    assert main(["edit", "--method", "memit", "--requests", str(file), "--backend", BACKENDS[-1], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_requests"] == 3 and report["weight_edits"] == 1 and report["restored_bitexact"] is True
    assert report["n_success"] >= 2, [(r["request"]["subject"], r["post"]) for r in report["requests"]]


def test_the_automatic_la_is_the_presets_la_on_smollm(smollm_hooked):
    """rel_feat_layer="auto" measures la on the probe facts: on SmolLM2 (from the preset's edit
    layer, 8) the restored share jumps at block 23, the preset's fixed la, and most probe facts are
    measurable."""
    from toplens.core.auto_la import PROBE_FACTS, model_la
    hp = get_preset("top", None)
    choice = model_la(ModelAdapter(smollm_hooked), hp.layers[0])
    assert choice.la == hp.layers[0] + hp.rel_feat_layer == 23
    measured = [p for p in choice.probes if math.isfinite(p.baseline)]  # NaN where unmeasurable
    assert len(measured) >= len(PROBE_FACTS) - 1
    assert choice.recovered[choice.layers.index(23)] - choice.recovered[choice.layers.index(22)] > 0.5

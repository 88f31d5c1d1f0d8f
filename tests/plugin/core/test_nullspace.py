"""project="nullspace": the update's key direction lies in the null space of the preserved keys'
second moment, so ordinary text's outputs at the edited layer barely move (within the bound the
eigenvalue threshold gives), the edited key is still mapped, and earlier edits' keys exactly not."""

import pytest
import torch

from toplens import EditHandle, ModelAdapter
from toplens.core import nullspace
from toplens.core.covariance import key_second_moment, sample_corpus
from toplens.core.hparams import HparamsError
from toplens.core.keys import mean_key
from toplens.core.templates import context_templates
from toplens.core.nullspace import null_space
from toplens.editors import memit, rets, rome, top
from toplens.model import hook_name
from tests.plugin.editors.test_memit import FAST as MEMIT
from tests.plugin.editors.test_rets import FAST as RETS
from tests.plugin.editors.test_rome import FAST as ROME, SECOND
from tests.plugin.editors.test_top import FAST as TOP, REQUEST

THRESHOLD = 0.05


def _corpus_keys(adapter, layer):
    """K₀: the MLP keys at ``layer`` of every token of the default corpus (what C is built from)."""
    keys = []
    for text in sample_corpus(adapter):
        tokens = adapter.to_batch([adapter.tokenize(text)[:128]])
        keys.append(adapter.capture(tokens, [hook_name("key", layer)], stop_layer=layer + 1)[0][0])
    return torch.cat(keys).double()


def test_the_basis_spans_the_small_eigenvalues_and_projects(tiny_hooked):
    moment = key_second_moment(tiny_hooked, 1).float()
    space = null_space(moment, 1, THRESHOLD)
    b = space.basis.double()
    assert torch.allclose(b.T @ b, torch.eye(b.shape[1], dtype=torch.float64), atol=1e-5)
    values = torch.linalg.eigvalsh(moment.double())
    assert b.shape[1] == int((values <= THRESHOLD * values.max()).sum()) and 0 < space.kept_fraction < 1
    kept = (b.T @ moment.double() @ b).diagonal()  # the small end of the spectrum, not the large
    assert float(kept.max()) <= THRESHOLD * float(values.max()) * (1 + 1e-4)
    x = torch.randn(moment.shape[0])
    assert torch.allclose(space.project(space.project(x)), space.project(x), atol=1e-5)
    earlier = torch.randn(3, moment.shape[0])
    narrower = space.without(earlier)  # K_p: the earlier edits' keys leave the space
    nb = narrower.basis.double()
    assert nb.shape[1] == b.shape[1] - 3 and torch.allclose(nb.T @ nb, torch.eye(nb.shape[1], dtype=torch.float64), atol=1e-5)
    assert (earlier.double() @ nb).abs().max() < 1e-5 * float(earlier.norm())
    assert torch.allclose(space.project(nb.float()), nb.float(), atol=1e-5)  # still inside Û's span
    assert space.without(torch.zeros(0, moment.shape[0])) is space
    with pytest.raises(ValueError, match="nullspace_threshold.*1.5"):
        null_space(moment, 1, 1.5)
    with pytest.raises(HparamsError, match="project.*'alpha'"):
        ROME.replace(project="alpha")
    with pytest.raises(HparamsError, match="RomeHparams.nullspace_threshold=1e-09 keeps no key direction"):
        rome.compute(tiny_hooked, REQUEST, ROME.replace(project="nullspace", nullspace_threshold=1e-9))


#: a corpus of fewer tokens than d_mlp: its keys leave an exact null space at every layer
TEXTS = ["The weather was cold.", "She read a book."]


def _text_keys(adapter, layer):
    tokens = [adapter.to_batch([adapter.tokenize(t)]) for t in TEXTS]
    return torch.cat([adapter.capture(t, [hook_name("key", layer)], stop_layer=layer + 1)[0][0] for t in tokens]).double()


@pytest.mark.parametrize("editor, hp", [(rome, ROME), (rome, ROME.replace(mom2_adjustment=True)), (top, TOP),
                                         (rets, RETS.replace(mom2_adjustment=True)), (memit, MEMIT)],
                         ids=["rome", "rome-C", "top", "rets-C", "memit"])
def test_preserved_keys_outputs_do_not_move_under_every_editor(tiny_hooked, monkeypatch, editor, hp):
    """With C from a corpus of rank < d_mlp and a threshold that keeps only its exact null space,
    ‖K₀ ΔW‖ ≤ 1e-4 ‖K₀ W‖ (float error of keys of norm ~1 against directions they do not span),
    against a change of the order of ‖K₀ W‖ itself without the projection; the edit still rewrites."""
    monkeypatch.setattr(nullspace, "key_second_moment", lambda adapter, layer: key_second_moment(adapter, layer, TEXTS))
    adapter = ModelAdapter(tiny_hooked)
    hp = hp.replace(nullspace_threshold=1e-6)
    plain, projected = (editor.compute(tiny_hooked, REQUEST, hp.replace(project=p)) for p in ("none", "nullspace"))
    assert len(plain.deltas) == len(projected.deltas)
    for d_plain, d in zip(plain.deltas, projected.deltas):
        k0 = _text_keys(adapter, d.layer)
        assert len(k0) < adapter.d_mlp
        out = float((k0 @ adapter.w_out(d.layer).double()).norm())
        assert float((k0 @ d.delta.double()).norm()) <= 1e-4 * out
        assert float((k0 @ d_plain.delta.double()).norm()) > 0.05 * out
        assert float(d.delta.norm()) > 0  # the projected edit is not empty
    if editor is not memit:  # a rank-one fold still maps the edited key: k* · û = 1
        k_star = mean_key(adapter, d.layer, context_templates(adapter, hp.context_lengths), REQUEST.prompt,
                          REQUEST.subject, role="relation" if editor is rets else "subject")
        assert float(k_star.double() @ d.u[:, 0].double()) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("editor, hp", [(rome, ROME), (memit, MEMIT)], ids=["rome", "memit"])
def test_with_a_full_rank_corpus_the_change_stays_within_the_thresholds_bound(tiny_hooked, editor, hp):
    """‖K₀ ΔW‖ ≤ √(threshold · λ_max · n) ‖U‖ ‖V‖: Û keeps only eigenvalues up to threshold · λ_max."""
    adapter = ModelAdapter(tiny_hooked)
    hp = hp.replace(project="nullspace", nullspace_threshold=THRESHOLD)
    for d in editor.compute(tiny_hooked, REQUEST, hp).deltas:
        k0 = _corpus_keys(adapter, d.layer)
        lam_max = float(torch.linalg.eigvalsh(key_second_moment(tiny_hooked, d.layer).double()).max())
        bound = (THRESHOLD * lam_max * len(k0)) ** 0.5 * float(d.u.double().norm() * d.v.double().norm())
        assert float((k0 @ d.delta.double()).norm()) <= bound * (1 + 1e-4)


@pytest.mark.parametrize("editor, hp", [(rome, ROME), (rets, RETS), (memit, MEMIT)], ids=["rome", "rets", "memit"])
def test_in_a_sequential_run_a_later_edit_leaves_the_earlier_edits_keys_alone(tiny_hooked, editor, hp):
    """K_p: inside one SequentialProjection, a later edit's ΔW maps every remembered key to 0 (float
    error only), where the same edit without the run does not; the run's keys never leak outside it."""
    hp = hp.replace(project="nullspace", nullspace_threshold=0.5)
    adapter = ModelAdapter(tiny_hooked)
    run = nullspace.SequentialProjection()
    role = editor.EDITOR.fold_role
    with EditHandle(tiny_hooked) as handle:
        with run.active():
            first = editor.compute(tiny_hooked, REQUEST, hp)
            run.remember(adapter, [REQUEST], hp, role)
            handle.add(first)
            second = editor.compute(tiny_hooked, SECOND, hp)
        outside = editor.compute(tiny_hooked, SECOND, hp)
    assert nullspace._ACTIVE.get() is None
    for d, d_out in zip(second.deltas, outside.deltas, strict=True):
        k = run.keys[d.layer][0].double()
        scale = float(k.norm() * d.delta.double().norm())
        assert float((k @ d.delta.double()).norm()) <= 1e-5 * scale
        assert float((k @ d_out.delta.double()).norm()) > 1e-3 * float(k.norm() * d_out.delta.double().norm())


def test_a_sink_edit_leaves_both_of_its_keys_to_the_later_edits(tiny_hooked):
    """key="sink" with a one-token subject first: K_p holds the templates' mean key and the bare
    prompt's key, and a later edit maps both to 0."""
    from tests.plugin.core.test_fold import FIRST
    hp = ROME.replace(project="nullspace", nullspace_threshold=0.5, key="sink")
    adapter = ModelAdapter(tiny_hooked)
    run = nullspace.SequentialProjection()
    with EditHandle(tiny_hooked) as handle, run.active():
        first = rome.compute(tiny_hooked, FIRST, hp)
        assert first.deltas[0].rank == 2
        run.remember(adapter, [FIRST], hp, "subject")
        handle.add(first)
        second = rome.compute(tiny_hooked, SECOND, hp)
    (d,) = second.deltas
    assert len(run.keys[d.layer]) == 2
    for k in run.keys[d.layer]:
        k = k.double()
        assert float((k @ d.delta.double()).norm()) <= 1e-5 * float(k.norm() * d.delta.double().norm())

"""Gradient saliency of an edit's value optimization (the paper's Fig. 1-style analysis).

While an editor optimizes its δ (ROME's value, TOP's stage 1 / stage 2, any editor's stages), at every step the rewriting prompts are
run through the *whole* model with the current δ at the edit site, and the gradient of the
rewriting loss L (the mean NLL of the new target, as in the objective) is taken at the residual
stream after every block, ``blocks.{l}.hook_resid_post``. Per layer and token position we record

    ‖∂L/∂h_{l,i}‖        and        |h_{l,i} · ∂L/∂h_{l,i}|   (gradient × activation),

averaged over the optimization steps and over the rewriting prompts. The rewriting prompts are
context prefix + prompt; each is aligned onto the bare prompt's positions by token role (prefix
tokens are dropped), so the map has one column per token of the bare prompt. The paper's finding:
saliency concentrates at the last subject token and the last relation token.

The editors run the layers below the edit layer only once, so their own backward pass never
reaches those layers; this module runs its own full forward + backward per step (as the
editor's ``observe`` callback, which names the stage: its site and token role are data, so no
editor is named here) with backward hooks on every layer, attached through ``model.hooks`` so
they compose with any hooks the user has active.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from toplens.core.hparams import Hparams
from toplens.core.objective import rewrite_batch
from toplens.core.optimize import StepEvent
from toplens.core.positions import locate
from toplens.core.relation_ie import measured_from_end
from toplens.core.requests import EditRequest
from toplens.core.stages import Stage
from toplens.core.templates import context_templates
from toplens.editors import get_editor
from toplens.editors.presets import preset_or_given
from toplens.model import ModelAdapter, as_adapter

from toplens.analyses.tracing.maps import LayerPositionMap, token_labels
from toplens.analyses.tracing.saliency_probe import SaliencyProbe, delta_hook, prompt_alignment

logger = logging.getLogger(__name__)

FOCUS_ROLES = ("last_subject", "last_relation")


# ------------------------------------------------------------------------- result
@dataclass(frozen=True)
class SaliencyResult:
    """Gradient saliency of one edit's optimization.

    Attributes:
        grad_norm: mean ‖∂L/∂h‖ per [layer, bare-prompt position].
        grad_x_act: mean |h · ∂L/∂h| per [layer, position].
        method: the editor's name; edit_layer: its first edit layer l; relation_layer: the layer of
            the editor's first stage on the residual at the last relation token (TOP's la), or None.
        stages: the recorded stages' numbers in the editor's list (1-based; () for a one-stage
            editor); steps: optimization steps recorded;
        n_prompts: rewriting prompts averaged over.
    """

    grad_norm: LayerPositionMap
    grad_x_act: LayerPositionMap
    method: str
    edit_layer: int
    relation_layer: int | None
    stages: tuple[int, ...]
    steps: int
    n_prompts: int

    def maps(self) -> dict[str, LayerPositionMap]:
        return {"grad_norm": self.grad_norm, "grad_x_act": self.grad_x_act}

    def summary(self) -> dict[str, Any]:
        """Subject vs relation, per quantity: mean saliency of each role per layer and over all
        layers, the ratio last-token / other-tokens for subject and relation, and the fraction
        of layers ≥ the edit layer whose most salient position is the last subject or last
        relation token."""
        return {name: _map_summary(m, self.edit_layer) for name, m in self.maps().items()}

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: settings, both grids, tokens, roles, per-layer argmax, summary."""
        out: dict[str, Any] = {"method": self.method, "edit_layer": self.edit_layer,
                               "relation_layer": self.relation_layer, "stages": list(self.stages),
                               "steps": self.steps, "n_prompts": self.n_prompts,
                               "tokens": list(self.grad_norm.tokens), "roles": list(self.grad_norm.roles),
                               "summary": self.summary()}
        for name, m in self.maps().items():
            out[name] = {"values": m.values.tolist(), "argmax": _argmax_rows(m)}
        return out


def _argmax_rows(m: LayerPositionMap) -> list[dict[str, Any]]:
    """Per layer, the position of maximal saliency: index, token, role and value."""
    return [{"layer": layer, "index": i, "token": m.tokens[i], "role": m.roles[i], "value": float(m.values[layer, i])}
            for layer, i in enumerate(m.argmax_positions())]


def _map_summary(m: LayerPositionMap, edit_layer: int) -> dict[str, Any]:
    means = m.role_means()
    overall = {role: float(v.mean()) for role, v in means.items()}
    argmax_roles = [m.roles[i] for i in m.argmax_positions()]
    upper = argmax_roles[edit_layer:]
    fraction = lambda roles: sum(r in roles for r in upper) / max(len(upper), 1)  # noqa: E731
    ratio = lambda a, b: overall[a] / overall[b] if a in overall and overall.get(b) else None  # noqa: E731
    return {
        "per_layer": [{role: float(v[layer]) for role, v in means.items()} for layer in range(m.values.shape[0])],
        "overall": overall,
        "last_subject_over_subject": ratio("last_subject", "subject"),
        "last_relation_over_relation": ratio("last_relation", "relation"),
        "argmax_roles": argmax_roles,
        "layers_from_edit": len(upper),
        "fraction_argmax_last_subject_or_relation": fraction(FOCUS_ROLES),
        "fraction_argmax_last_subject": fraction(("last_subject",)),
        "fraction_argmax_last_relation": fraction(("last_relation",)),
    }


# --------------------------------------------------------------------------- entry
def resolve_hparams(adapter: ModelAdapter, method: str, hparams: Hparams | None, steps: int | None) -> Hparams:
    """The method's hyperparameters (its preset for this model unless given), with ``steps``
    replacing every stage's optimization steps."""
    get_editor(method)  # names the known methods for an unknown one
    hp = preset_or_given(method, hparams, adapter.name, adapter.n_layers)
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int; got {steps!r}")
        hp = hp.with_steps(steps)
    return hp


def chosen_stages(stages: tuple[Stage, ...], wanted: Sequence[int]) -> tuple[int, ...]:
    """The 1-based numbers of the editor's stages to record: ``wanted`` among those it has."""
    picked = tuple(sorted({int(i) for i in wanted}))
    if not picked or any(i < 1 for i in picked):
        raise ValueError(f"stages must be a non-empty set of stage numbers (1, 2, ...); got {tuple(wanted)!r}")
    present = tuple(i for i in picked if i <= len(stages))
    if not present:
        raise ValueError(f"stages={picked!r}: the editor has {len(stages)} stage(s)")
    return present


class _Recorder:
    """The observer: a saliency step for every optimization step of a chosen stage, and the last
    δ of each chosen stage in case no step was taken (an edit that converged at once)."""

    def __init__(self, probe: SaliencyProbe, batch, chosen: Sequence[Stage]):
        self.probe, self.batch, self.chosen = probe, batch, list(chosen)
        self.last: dict[Stage, Any] = {}

    def __call__(self, stage: Stage, event: StepEvent) -> None:
        if stage not in self.chosen:
            return
        if event.final:
            self.last[stage] = event.delta.detach().clone()
        else:
            self.probe.record([delta_hook(stage, self.batch, event.delta)])

    def finish(self) -> None:
        if self.probe.steps == 0 and self.last:
            stage = [s for s in self.chosen if s in self.last][-1]
            self.probe.record([delta_hook(stage, self.batch, self.last[stage])])


def gradient_saliency(
    model, request: EditRequest, method: str = "rome", hparams: Hparams | None = None, *,
    steps: int | None = None, stages: Sequence[int] = (1, 2), templates: Sequence[str] | None = None,
    progress: bool = False,
) -> SaliencyResult:
    """Gradient saliency of ``method``'s optimization for ``request`` (the model is not changed).

    Args:
        model: a TransformerLens model or adapter; hooks the user has active stay active.
        request: the fact to rewrite.
        method: any registered editor; its stages say where δ goes ("rome": the MLP output at the
            last subject token; "top": stage 1 on the residual at la, last relation token, and
            stage 2 on the MLP output of l).
        hparams: the method's hyperparameters (default: its preset for this model).
        steps: override the optimization steps (every stage).
        stages: the numbers of the editor's stages to record (1-based, in ``editor.stages`` order).
        templates: context templates (default: generated for the model as the editors do).
    """
    adapter = as_adapter(model)
    adapter.require_mlp()
    editor = get_editor(method)
    hp = editor.settle(adapter, request, resolve_hparams(adapter, method, hparams, steps))
    all_stages = editor.stages(hp)
    for stage in all_stages:
        adapter.check_layer(stage.site.layer, f"{method} {stage.name}-stage layer")
    numbers = chosen_stages(all_stages, stages)
    chosen = [all_stages[i - 1] for i in numbers]
    templates = tuple(templates or context_templates(adapter, hp.context_lengths))
    at = getattr(hp, "relation_position", "last")
    la = [s.site.layer for s in all_stages if s.role == "relation" and s.site.kind == "resid_post"]
    from_end = measured_from_end(adapter, request, at, la[0]) if la else None
    batch = rewrite_batch(adapter, request, templates, [hp.kl_prompt], at, from_end)
    probe = SaliencyProbe(adapter, batch, prompt_alignment(adapter, request, templates))
    recorder = _Recorder(probe, batch, chosen)
    editor.compute(adapter, request, hp, observe=recorder, templates=templates, progress=progress)
    recorder.finish()
    relation = [s.site.layer for s in all_stages if s.role == "relation" and s.site.kind == "resid_post"]
    return _result(adapter, request, probe, method, hp.edit_layers[0], relation[0] if relation else None,
                   numbers if len(all_stages) > 1 else (), len(templates))


def _result(adapter, request, probe: SaliencyProbe, method, layer, relation_layer, stages, n_prompts) -> SaliencyResult:
    grad, gxa = probe.maps()
    tokens, roles = token_labels(adapter, locate(adapter, request.prompt, request.subject))
    label = f"{method.upper()} at layer {layer}"
    return SaliencyResult(LayerPositionMap(grad, tokens, roles, "grad_norm", f"‖∂L/∂h‖, {label}"),
                          LayerPositionMap(gxa, tokens, roles, "grad_x_act", f"|h·∂L/∂h|, {label}"),
                          method, layer, relation_layer, stages, probe.steps, n_prompts)

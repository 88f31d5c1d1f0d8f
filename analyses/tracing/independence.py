"""The paper's conditional-independence check: P[o* | h_r, v] = P[o* | h_r].

TOP splits P[o* | v] into P[o* | h_r] · P[h_r | v]; the split assumes that once the relation
feature h_r (the residual after block la at the last relation token) is fixed, the subject feature
v (the MLP output of the edit layer l at the last subject token) no longer changes the prediction.
Here h_r is patched to TOP's stage-1 target h*_r, v is set to several values — v_init, TOP's v*,
ROME's v*, and v_init plus random directions of matched norm — and P(o*) is measured. A small
spread (max − min, std) of P(o*) across the values supports the assumption. For contrast each
row also holds P(o*) with only v set (h_r left free), where v is expected to matter.

Nothing is folded into the weights: v and h_r are set with hooks, so the model is unchanged.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.editors import get_editor
from toplens.editors.rome import RomeHparams
from toplens.editors.top import LayerDetails, TopDetails, TopHparams
from toplens.core.edits import WeightEdit
from toplens.core.interventions import Hook, set_vectors
from toplens.model import ModelAdapter, as_adapter, hook_name
from toplens.core.positions import locate, target_ids
from toplens.editors.presets import get_preset
from toplens.core.requests import EditRequest
from toplens.core.templates import context_templates

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubjectFeatureRow:
    """P(o*) for one subject feature v.

    Attributes:
        name: where v comes from ("v_init", "top_v_star", "rome_v_star", "random_0", ...).
        v_norm: ‖v‖; delta_norm: ‖v − v_init‖.
        p_fixed: P(o*) with v set and h_r patched to h*_r.
        p_free: P(o*) with v set and h_r left as the model computes it.
    """

    name: str
    v_norm: float
    delta_norm: float
    p_fixed: float
    p_free: float


@dataclass(frozen=True)
class IndependenceResult:
    """The rows and their spread; ``layer`` = l (where v is set), ``la`` (where h_r is fixed)."""

    request: EditRequest
    layer: int
    la: int
    rows: list[SubjectFeatureRow]
    p_h_star: float

    def spread(self, column: str = "p_fixed") -> dict[str, float]:
        """max − min and std of a column over the rows."""
        values = [getattr(r, column) for r in self.rows]
        std = statistics.pstdev(values) if len(values) > 1 else 0.0
        return {"max_minus_min": max(values) - min(values), "std": std, "mean": statistics.fmean(values)}

    def to_json(self) -> dict[str, Any]:
        return {"request": self.request.to_dict(), "layer": self.layer, "la": self.la, "p_h_star": self.p_h_star,
                "rows": [asdict(r) for r in self.rows], "fixed": self.spread("p_fixed"),
                "free": self.spread("p_free")}


# ------------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class _Probe:
    """The bare prompt followed by all target tokens but the last, and where to set v and h_r."""

    tokens: Tensor
    target: Tensor
    last_subject: int
    last_relation: int


def _probe(adapter: ModelAdapter, request: EditRequest) -> _Probe:
    pos = locate(adapter, request.prompt, request.subject)
    target = target_ids(adapter, request.text, request.target_new)
    tokens = adapter.to_batch([list(pos.tokens) + target[:-1]])
    return _Probe(tokens, torch.tensor(target, device=tokens.device), pos.last_subject, pos.last_relation)


@torch.no_grad()
def target_prob(adapter: ModelAdapter, probe: _Probe, hooks: Sequence[Hook]) -> float:
    """P(o*) (all target tokens, teacher forced) on the bare prompt under ``hooks``."""
    with adapter.hooks(hooks):
        logits = adapter.logits(probe.tokens)[0]
    cols = torch.arange(probe.last_relation, probe.last_relation + len(probe.target), device=logits.device)
    return float(logits[cols].float().log_softmax(-1).gather(1, probe.target[:, None]).sum().exp())


def subject_hook(layer: int, probe: _Probe, v: Float[Tensor, " d_model"]) -> Hook:
    return set_vectors(hook_name("value", layer), v[None], [0], [probe.last_subject])


def relation_hook(la: int, probe: _Probe, h: Float[Tensor, " d_model"]) -> Hook:
    return set_vectors(hook_name("resid_post", la), h[None], [0], [probe.last_relation])


def measure(adapter: ModelAdapter, probe: _Probe, info: LayerDetails, name: str, v: Tensor) -> SubjectFeatureRow:
    """One row: P(o*) with v set, with and without h_r fixed to h*_r."""
    v_hook = subject_hook(info.layer, probe, v)
    fixed = target_prob(adapter, probe, [v_hook, relation_hook(info.la, probe, info.h_star)])
    free = target_prob(adapter, probe, [v_hook])
    return SubjectFeatureRow(name, float(v.norm()), float((v - info.v_init).norm()), fixed, free)


# ----------------------------------------------------------------------- the values of v
def random_values(v_init: Tensor, norm: float, n: int, seed: int) -> list[Tensor]:
    """v_init plus ``n`` seeded random directions scaled to ``norm``."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        direction = torch.randn(v_init.shape[-1], generator=generator).to(v_init.device, v_init.dtype)
        out.append(v_init + norm * direction / direction.norm())
    return out


def rome_value(adapter: ModelAdapter, request: EditRequest, layer: int, hp: RomeHparams | None,
               templates: Sequence[str] | None) -> Tensor:
    """ROME's v* at the same edit layer (from a computed ROME edit; the model is not changed)."""
    hp = (hp or get_preset("rome", adapter.name, adapter.n_layers)).replace(layer=layer)
    templates = tuple(templates or context_templates(adapter, hp.context_lengths))
    edit = get_editor("rome").compute(adapter, request, hp, templates=templates)
    return edit.details.value.optimized


def top_details(adapter: ModelAdapter, request: EditRequest, hp: TopHparams | None, top_edit: WeightEdit | None,
                templates: Sequence[str] | None) -> LayerDetails:
    """TOP's first edit layer: h*_r, v_init and v* (from ``top_edit`` or a fresh TOP computation)."""
    if top_edit is None:
        hp = hp or get_preset("top", adapter.name, adapter.n_layers)
        top_edit = get_editor("top").compute(adapter, request, hp,
                                             **({} if templates is None else {"templates": templates}))
    if top_edit.method != "top" or not isinstance(top_edit.details, TopDetails):
        raise ValueError(f"top_edit must be a TOP edit with its details; got method {top_edit.method!r}")
    return top_edit.details.layers[0]


def independence_check(
    model, request: EditRequest, hparams: TopHparams | None = None, *, top_edit: WeightEdit | None = None,
    rome_hparams: RomeHparams | None = None, include_rome: bool = True, n_random: int = 4, seed: int = 0,
    templates: Sequence[str] | None = None,
) -> IndependenceResult:
    """Vary the subject feature v with h_r fixed to h*_r, and measure P(o*).

    Args:
        model: a TransformerLens model or adapter (not changed).
        request: the fact; o* = ``request.target_new``.
        hparams: TOP's hyperparameters (default: preset), unless ``top_edit`` (a computed TOP edit
            of this request, with details) is given; its first edit layer is used.
        rome_hparams / include_rome: ROME's v* at the same layer as one more value of v.
        n_random: random values v_init + ρ·u (u a seeded unit direction), ρ the largest
            ‖v* − v_init‖ among TOP's and ROME's.
        templates: context templates for the optimizations.
    """
    adapter = as_adapter(model)
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise ValueError(f"n_random must be a non-negative int; got {n_random!r}")
    info = top_details(adapter, request, hparams, top_edit, templates)
    values = {"v_init": info.v_init, "top_v_star": info.v_star}
    if include_rome:
        values["rome_v_star"] = rome_value(adapter, request, info.layer, rome_hparams, templates)
    radius = max(float((v - info.v_init).norm()) for v in values.values())
    for i, v in enumerate(random_values(info.v_init, radius, n_random, seed)):
        values[f"random_{i}"] = v
    probe = _probe(adapter, request)
    rows = [measure(adapter, probe, info, name, v.detach()) for name, v in values.items()]
    p_h_star = target_prob(adapter, probe, [relation_hook(info.la, probe, info.h_star)])
    return IndependenceResult(request, info.layer, info.la, rows, p_h_star)

"""TOP's la chosen without a sweep (``rel_feat_layer="auto"``), the paper's open question 3.

The relation feature h_r is read at the last prompt token after block la. A cheap measurement says
where that token takes in the subject's fact: corrupt the subject (causal tracing's embedding
noise, :mod:`toplens.core.corruption`) and restore only the last token's clean residual after block
L. The restored probability of the current object o rises with L, from the corrupted run's towards
the clean one's, as the last token gathers the subject through attention. Each candidate layer's
*share* is how much of the gap P(o | clean) − P(o | corrupted) its restoration recovers.

Two rules read la off the shares (``rule``):
- ``"rise"`` (default): the layer whose share rises most over the layer below it (the first
  candidate over the share after the edit layer itself), the block at which the last token takes
  the fact in. On SmolLM2 that jump is at block 23 for most facts.
- ``"fraction"``: the first layer whose share reaches ``fraction`` (0.5). It fires early, close to
  the edit layer, where half the gap is often recovered by a slow drift (docs/top_stage2.md).

la is taken per model (``auto_la="model"``, the default): the rise of the median share over a
small set of well-known probe facts of our own, kept per model object and edit layer (and measured
again once the model's parameters change in place), so that every request gets the same la. ``auto_la="request"`` reads the rise off the request's own fact,
falling back to the model's la when corrupting the subject barely moves P(o) (the model does not
know the fact). One batched forward of (candidate layers × noise samples) rows measures a fact.
"""

from __future__ import annotations

import logging
import math
import statistics
import weakref
from dataclasses import dataclass
from typing import Callable, Literal, Sequence, TypeVar, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.corruption import MAX_ROWS, Corruption, answer_probs, clean_prob, make_corruption, restored_probs
from toplens.core.positions import locate
from toplens.core.relation_positions import relation_position, token_strategy
from toplens.core.requests import EditRequest
from toplens.core.scoring import top_tokens
from toplens.model import ModelAdapter

logger = logging.getLogger(__name__)
H = TypeVar("H")  # TopHparams (core does not import the editors)

#: the share of the clean-corrupted gap the last token must recover after block la
FRACTION = 0.5
SAMPLES = 10
#: below this share of P(o | clean), the subject's corruption says nothing about where it is read
MIN_GAP = 0.05
LaRule = Literal["rise", "fraction"]
LA_RULES: tuple[str, ...] = get_args(LaRule)
AutoLa = Literal["model", "request"]
AUTO_LA: tuple[str, ...] = get_args(AutoLa)
#: (prompt, subject, o): well-known facts of our own, none from a benchmark, that place the model's la
PROBE_FACTS: tuple[tuple[str, str, str], ...] = (
    ("{} is located in the city of", "The Eiffel Tower", " Paris"),
    ("{} is the capital city of", "Berlin", " Germany"),
    ("{} is a city in the country of", "Barcelona", " Spain"),
    ("The official language of {} is", "Brazil", " Portuguese"),
    ("{} was developed by the company", "The iPhone", " Apple"),
    ("{} was written by", "Romeo and Juliet", " William"),
    ("The mother tongue of {} is", "Vladimir Putin", " Russian"),
    ("{} is the currency of", "The yen", " Japan"),
    ("{} was painted by", "The Mona Lisa", " Leonardo"),
)
#: model -> {(edit layer, relation position): (parameter versions when measured, ModelLa)}
_MODEL_LA: "weakref.WeakKeyDictionary[object, dict[tuple[int, str], tuple[tuple[int, ...], ModelLa]]]" = \
    weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LaChoice:
    """The chosen la, and the measurement behind it: per candidate layer, the share of
    P(o | clean) − P(o | corrupted) that restoring the last token's residual after it recovers."""

    la: int
    layers: tuple[int, ...]
    recovered: tuple[float, ...]  # NaN where the corruption moved P(o) too little to measure
    clean: float
    corrupted: float
    answer: str
    rule: str = "rise"
    baseline: float = 0.0  # the share after the edit layer itself, where the first rise starts


@dataclass(frozen=True)
class ModelLa:
    """The model's la: per candidate layer the median share over the probe facts that could be
    measured, and each probe's own measurement (a LaChoice). Unlike a LaChoice it has no single
    clean or corrupted probability: those are per probe."""

    la: int
    layers: tuple[int, ...]
    recovered: tuple[float, ...]
    probes: tuple[LaChoice, ...]
    baseline: float = 0.0


def restored_last_token(adapter: ModelAdapter, corruption: Corruption, layers: tuple[int, ...],
                        position: int | None = None) -> Float[Tensor, " layer"]:
    """P(answer) with the subject corrupted and the clean residual of the last token (or of
    ``position``, where h_r is read) restored after each of ``layers`` (one copy of the noise
    samples per layer, batched in forwards of at most ``MAX_ROWS`` rows), averaged over samples."""
    at = corruption.last if position is None else position
    per = max(1, MAX_ROWS // corruption.n_samples)
    return torch.cat([restored_probs(adapter, corruption, [(layer, at) for layer in layers[i:i + per]])
                      for i in range(0, len(layers), per)])


def choose_la(adapter: ModelAdapter, request: EditRequest, edit_layer: int, *, rule: str = "rise",
              fraction: float = FRACTION, n_samples: int = SAMPLES, seed: int = 0, relation_at: str = "last",
              fallback: Callable[[], int] | None = None, warn: bool = True) -> LaChoice:
    """la for ``request`` edited at ``edit_layer``, from the shares of edit_layer+1 .. n_layers−1
    restored at h_r's token (the ``relation_at`` strategy of :mod:`toplens.core.relation_positions`)
    for o (the request's target_true, else the model's top next token): the largest rise over the
    layer below, the first over the share after the edit layer itself (``rule="rise"``), or the first
    layer reaching ``fraction`` (``"fraction"``). When corrupting the subject moves P(o) by less than
    ``MIN_GAP`` of its clean value the shares are NaN and la is ``fallback()`` (default: the middle
    candidate)."""
    _check_rule(rule)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    layers = _candidates(adapter, edit_layer)
    answer = request.target_true or top_tokens(adapter, request.text, 1)[0].token
    corruption = make_corruption(adapter, request.prompt, request.subject, answer, n_samples=n_samples, seed=seed)
    with torch.no_grad():
        high, low = clean_prob(adapter, corruption), float(answer_probs(adapter, corruption).mean())
        at = relation_position(adapter, locate(adapter, request.prompt, request.subject), relation_at)
        restored = restored_last_token(adapter, corruption, (edit_layer, *layers), at)
    gap = high - low
    if gap <= MIN_GAP * high:  # the subject barely moves P(o): nothing to read
        la = _middle(layers) if fallback is None else fallback()
        (logger.warning if warn else logger.debug)(
            "rel_feat_layer='auto' for %r: corrupting the subject moves P(%r) only from %.3g to %.3g, too little to "
            "place la; la = %d, the %s", request.text, answer, high, low, la,
            "middle candidate" if fallback is None else "model's la")
        return LaChoice(la, layers, (float("nan"),) * len(layers), high, low, answer, rule, float("nan"))
    base, *share = ((restored - low) / gap).tolist()
    la = read_la(layers, share, rule, fraction, request.text, base)
    return LaChoice(la, layers, tuple(share), high, low, answer, rule, base)


def read_la(layers: tuple[int, ...], share: Sequence[float], rule: str = "rise", fraction: float = FRACTION,
            label: str = "", base: float = 0.0) -> int:
    """la from the recovered shares of ``layers``: ``"rise"``, the layer whose share rises most over
    the layer below (the first over ``base``, the share after the edit layer; ties to the earlier
    layer); ``"fraction"``, the first layer whose share reaches ``fraction``, else the layer that
    recovers most (with a warning naming ``label``). Every share must be finite."""
    _check_rule(rule)
    if len(share) != len(layers) or not all(map(math.isfinite, [base, *share])):
        raise ValueError(f"read_la needs one finite share per layer; got {len(share)} for {len(layers)} layers: "
                         f"{list(share)!r}")
    if rule == "rise":
        rises = [b - a for a, b in zip([base, *share[:-1]], share)]
        return layers[max(range(len(layers)), key=rises.__getitem__)]
    reached = [layer for layer, s in zip(layers, share) if s >= fraction]
    if reached:
        return reached[0]
    la = layers[max(range(len(layers)), key=share.__getitem__)]
    logger.warning("rel_feat_layer='auto' for %r: no layer recovers %.0f%% of the gap; la = %d, the layer that "
                   "recovers most (%.2f)", label, 100 * fraction, la, max(share))
    return la


def model_la(adapter: ModelAdapter, edit_layer: int, relation_at: str = "last") -> ModelLa:
    """The model's la for ``edit_layer``: the largest rise of the median share over ``PROBE_FACTS``
    (those whose corruption moves P(o) enough to measure). Kept per model object and measured
    again once its parameters change in place (an applied edit, ``load_state_dict``)."""
    versions = tuple(p._version for p in adapter.model.parameters())
    per_model = _MODEL_LA.setdefault(adapter.model, {})
    seen = per_model.get((edit_layer, relation_at))
    if seen is not None and seen[0] == versions:
        logger.debug("rel_feat_layer='auto': the model's la for layer %d is unchanged (%d)", edit_layer, seen[1].la)
        return seen[1]
    choice = _measure_model_la(adapter, edit_layer, relation_at)
    per_model[edit_layer, relation_at] = (versions, choice)
    return choice


def _measure_model_la(adapter: ModelAdapter, edit_layer: int, relation_at: str) -> ModelLa:
    layers = _candidates(adapter, edit_layer)
    probes = tuple(choose_la(adapter, EditRequest(prompt, subject, " something", answer), edit_layer,
                             relation_at=relation_at, warn=False) for prompt, subject, answer in PROBE_FACTS)
    known = [p for p in probes if math.isfinite(p.baseline)]
    if not known:
        la = _middle(layers)
        logger.warning("rel_feat_layer='auto': no probe fact moves when its subject is corrupted; la = %d, the "
                       "middle candidate", la)
        return ModelLa(la, layers, (float("nan"),) * len(layers), probes)
    median = [statistics.median(col) for col in zip(*(p.recovered for p in known))]
    base = statistics.median(p.baseline for p in known)
    return ModelLa(read_la(layers, median, base=base), layers, tuple(median), probes, base)


def _check_rule(rule: str) -> None:
    if rule not in LA_RULES:
        raise ValueError(f"rule must be one of {list(LA_RULES)}; got {rule!r}")


def _middle(layers: tuple[int, ...]) -> int:
    """The fallback la where nothing can be read: the middle candidate layer."""
    return layers[len(layers) // 2]


def _candidates(adapter: ModelAdapter, edit_layer: int) -> tuple[int, ...]:
    layers = tuple(range(edit_layer + 1, adapter.n_layers))
    if not layers:
        raise ValueError(f"rel_feat_layer='auto' needs a layer above the edit layer {edit_layer}; "
                         f"the model has {adapter.n_layers}")
    return layers


def settle(adapter: ModelAdapter, request: EditRequest, hp: H) -> tuple[H, LaChoice | ModelLa | None]:
    """TOP's ``hp`` as it runs for ``request``: rel_feat_layer="auto" becomes the gap from the last
    edit layer to the model's la (``hp.auto_la="model"``) or the request's (``"request"``); earlier
    edit layers keep the same gap."""
    if hp.rel_feat_layer != "auto":
        return hp, None
    edit_layer, at = hp.layers[-1], token_strategy(hp.relation_position)  # a measured position needs la first
    if hp.auto_la == "request":  # the probe facts are measured only when the request gives no signal
        choice = choose_la(adapter, request, edit_layer, relation_at=at,
                           fallback=lambda: model_la(adapter, edit_layer, at).la)
    else:
        choice = model_la(adapter, edit_layer, at)
    logger.info("rel_feat_layer='auto' (%s): la = %d for %r", hp.auto_la, choice.la, request.text)
    return hp.replace(rel_feat_layer=choice.la - edit_layer), choice

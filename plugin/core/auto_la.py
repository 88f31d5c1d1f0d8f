"""TOP's la chosen per request (``rel_feat_layer="auto"``), the paper's open question 3.

The relation feature h_r is read at the last prompt token after block la. A cheap measurement says
where that token has taken in what it needs of the subject: corrupt the subject (causal tracing's
embedding noise, :mod:`toplens.core.corruption`) and restore only the last token's clean residual
after block L. The restored probability of the current object o rises with L, from the corrupted
run's towards the clean one's, as the last token gathers the subject through attention. la is the
first layer above the edit layer whose restoration recovers at least ``fraction`` of the gap
P(o | clean) − P(o | corrupted): the earliest layer at which h_r carries the subject's fact. One
batched forward of (candidate layers × noise samples) rows decides it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.corruption import MAX_ROWS, Corruption, answer_probs, clean_prob, make_corruption
from toplens.core.interventions import patch_from
from toplens.core.positions import locate
from toplens.core.relation_positions import relation_position
from toplens.core.requests import EditRequest
from toplens.core.scoring import top_tokens
from toplens.model import ModelAdapter, hook_name

logger = logging.getLogger(__name__)
H = TypeVar("H")  # TopHparams (core does not import the editors)

#: the share of the clean-corrupted gap the last token must recover after block la
FRACTION = 0.5
SAMPLES = 10
#: below this share of P(o | clean), the subject's corruption says nothing about where it is read
MIN_GAP = 0.05


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


def restored_last_token(adapter: ModelAdapter, corruption: Corruption, layers: tuple[int, ...],
                        position: int | None = None) -> Float[Tensor, " layer"]:
    """P(answer) with the subject corrupted and the clean residual of the last token (or of
    ``position``, where h_r is read) restored after each of ``layers`` (one copy of the noise
    samples per layer, batched in forwards of at most ``MAX_ROWS`` rows), averaged over samples."""
    at = corruption.last if position is None else position
    per = max(1, MAX_ROWS // corruption.n_samples)
    return torch.cat([_restored(adapter, corruption, layers[i:i + per], at) for i in range(0, len(layers), per)])


def _restored(adapter: ModelAdapter, corruption: Corruption, layers: tuple[int, ...], at: int) -> Float[Tensor, " layer"]:
    c = corruption
    names = [hook_name("resid_post", layer) for layer in layers]
    clean = adapter.capture(c.tokens, names, stop_layer=max(layers) + 1)
    n = c.n_samples
    patches = []
    for i, (name, state) in enumerate(zip(names, clean)):
        mask = torch.zeros(len(layers) * n, c.n_positions, dtype=torch.bool)
        mask[i * n:(i + 1) * n, at] = True
        patches.append(patch_from(name, state.detach().expand(len(layers) * n, -1, -1), mask))
    return answer_probs(adapter, c, patches, repeats=len(layers)).view(len(layers), n).mean(-1)


def choose_la(adapter: ModelAdapter, request: EditRequest, edit_layer: int, *, fraction: float = FRACTION,
              n_samples: int = SAMPLES, seed: int = 0, relation_at: str = "last") -> LaChoice:
    """la for ``request`` edited at ``edit_layer``: the first layer in edit_layer+1 .. n_layers−1
    whose restoration at h_r's token (the ``relation_at`` strategy of
    :mod:`toplens.core.relation_positions`) recovers ``fraction`` of the gap for o (the request's
    target_true, else the model's top next token); the layer that recovers most when none does;
    the middle candidate, with NaN shares, when corrupting the subject moves P(o) by less than
    ``MIN_GAP`` of its clean value."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    layers = tuple(range(edit_layer + 1, adapter.n_layers))
    if not layers:
        raise ValueError(f"rel_feat_layer='auto' needs a layer above the edit layer {edit_layer}; "
                         f"the model has {adapter.n_layers}")
    answer = request.target_true or top_tokens(adapter, request.text, 1)[0].token
    corruption = make_corruption(adapter, request.prompt, request.subject, answer, n_samples=n_samples, seed=seed)
    with torch.no_grad():
        high, low = clean_prob(adapter, corruption), float(answer_probs(adapter, corruption).mean())
        at = relation_position(adapter, locate(adapter, request.prompt, request.subject), relation_at)
        restored = restored_last_token(adapter, corruption, layers, at)
    gap = high - low
    share = ((restored - low) / gap).tolist() if gap > MIN_GAP * high else [float("nan")] * len(layers)
    reached = [layer for layer, s in zip(layers, share) if s >= fraction]
    if gap <= MIN_GAP * high:  # the subject barely moves P(o): nothing to read, the middle layer
        la = layers[len(layers) // 2]
        logger.warning("rel_feat_layer='auto' for %r: corrupting the subject moves P(%r) only from %.3g to %.3g, "
                       "too little to place la; la = %d, the middle candidate", request.text, answer, high, low, la)
    elif reached:
        la = reached[0]
    else:
        la = layers[max(range(len(layers)), key=share.__getitem__)]
        logger.warning("rel_feat_layer='auto' for %r: no layer recovers %.0f%% of P(%r)'s gap; la = %d, the layer "
                       "that recovers most (%.2f)", request.text, 100 * fraction, answer, la, max(share))
    return LaChoice(la, layers, tuple(share), high, low, answer)


def settle(adapter: ModelAdapter, request: EditRequest, hp: H) -> tuple[H, LaChoice | None]:
    """TOP's ``hp`` as it runs for ``request``: rel_feat_layer="auto" becomes the gap from the last
    edit layer to the la :func:`choose_la` picks (earlier edit layers keep the same gap)."""
    if hp.rel_feat_layer != "auto":
        return hp, None
    choice = choose_la(adapter, request, hp.layers[-1], relation_at=hp.relation_position)
    logger.info("rel_feat_layer='auto': la = %d for %r (share of the gap recovered there: %s)", choice.la,
                request.text, f"{choice.recovered[choice.layers.index(choice.la)]:.2f}")
    return hp.replace(rel_feat_layer=choice.la - hp.layers[-1]), choice

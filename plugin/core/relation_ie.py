"""The relation token with the highest indirect effect: where TOP reads h_r with
``relation_position="max_ie"`` (the paper's open question 2, answered by a measurement rather than
a rule about words).

Corrupt the subject (causal tracing's embedding noise, :mod:`toplens.core.corruption`) and, for each
token after the subject, restore only that token's clean residual after block la. Its indirect
effect is P(o | corrupted, restored) − P(o | corrupted), with o the request's true object (else the
model's top next token) read at the last position. The token with the largest effect is the one
whose state at la carries most of what the last token needs from the subject: the relation as the
model reads it. One forward of (tokens after the subject × noise samples) rows measures it.

The choice is made on the bare prompt and kept as a distance from the last prompt token, so that
every rewriting row (a context prefix, then the prompt) reads h_r at the same word. Where
corrupting the subject barely moves P(o) (the model does not know the fact) there is nothing to
read, and h_r stays at the last token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from toplens.core.corruption import answer_probs, clean_prob, make_corruption, restored_probs
from toplens.core.requests import EditRequest
from toplens.core.scoring import top_tokens
from toplens.model import ModelAdapter

logger = logging.getLogger(__name__)

SAMPLES = 10
#: below this share of P(o | clean), corrupting the subject says nothing about where it is read
MIN_GAP = 0.05


@dataclass(frozen=True)
class RelationIE:
    """Per token after the subject of the bare prompt, the indirect effect of restoring its
    residual after block ``la``, and the chosen token as a distance from the last prompt token."""

    la: int
    positions: tuple[int, ...]
    effects: tuple[float, ...]  # NaN where the corruption moved P(o) too little to measure
    clean: float
    corrupted: float
    answer: str
    from_end: int  # 0: the last token

    @property
    def chosen(self) -> int:
        return self.positions[-1] - self.from_end


@torch.no_grad()
def relation_ie(adapter: ModelAdapter, request: EditRequest, la: int, *, n_samples: int = SAMPLES,
                seed: int = 0, min_gap: float | None = None) -> RelationIE:
    """The indirect effect at la of every token after the subject of ``request``'s bare prompt,
    and the token with the largest (the last token where corrupting the subject moves P(o) by no
    more than ``min_gap`` (default ``MIN_GAP``) of its clean value)."""
    min_gap = MIN_GAP if min_gap is None else min_gap
    answer = request.target_true or top_tokens(adapter, request.text, 1)[0].token
    c = make_corruption(adapter, request.prompt, request.subject, answer, n_samples=n_samples, seed=seed)
    positions = tuple(c.positions.relation_span) or (c.positions.last_relation,)
    high, low = clean_prob(adapter, c), float(answer_probs(adapter, c).mean())
    if high - low <= min_gap * high:
        logger.info("relation_position='max_ie' for %r: corrupting the subject moves P(%r) only from %.3g to "
                    "%.3g; h_r stays at the last token", request.text, answer, high, low)
        return RelationIE(la, positions, (float("nan"),) * len(positions), high, low, answer, 0)
    effects = (restored_probs(adapter, c, [(la, at) for at in positions]) - low).tolist()
    best = max(range(len(positions)), key=lambda i: (effects[i], i))  # ties to the later token
    return RelationIE(la, positions, tuple(effects), high, low, answer, positions[-1] - positions[best])


def measured_from_end(adapter: ModelAdapter, request: EditRequest, strategy: str, la: int) -> int | None:
    """The measured distance of h_r from the last token for a measured ``strategy`` ("max_ie"),
    else None (the other strategies are read off the tokens)."""
    return relation_ie(adapter, request, la).from_end if strategy == "max_ie" else None

"""The new object kept out of the subject's other facts: a penalty on o* overtaking, in the text the
unedited model writes about the subject, the token that model put first.

R-Specificity fails where, on a prompt about another relation of the subject, o* becomes more
likely than the model's own answer. The same can be watched on text of the model's own: the
continuations it samples from the subject's name alone (:func:`toplens.core.preservation.subject_texts`;
no relation, no prompt of any dataset) state the subject's facts as the model knows them. At each
position after the subject the penalty is

    w_t · max(0, log P_edited(o* | t) − log P_edited(top_t | t) + margin),

with top_t the unedited model's most likely next token there and ``margin`` nats of room kept
between them. Unlike the KL of :class:`~toplens.core.preservation.SubjectPreservation`, nothing else
in those distributions is held, so the edit stays free to change how the subject is read, except
that o* may not take over a slot of another fact. The edited fact's own slot is down-weighted:
w_t = 1 − P_unedited(o | t), so a position where the unedited model was sure of the old object o (the
text states the edited fact) weighs little, and positions whose top token is o* itself are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from toplens.core.fold import RankOneFold
from toplens.core.optimize import LossTerms
from toplens.core.preservation import SubjectPreservation, WithPenalty, objects_first_tokens, subject_texts
from toplens.core.requests import EditRequest
from toplens.model import ModelAdapter

#: nats by which o* must stay below the unedited model's top token in the subject's text
MARGIN = 2.0


@dataclass
class ObjectLeak(SubjectPreservation):
    """The weighted mean over the positions after the subject of ``tokens`` of
    max(0, log P(o*) − log P(top_t) + margin) under δ (see the module), ``new_id`` = o*'s first
    token, ``true_id`` = o's (None when the request names no o)."""

    new_id: int = -1
    true_id: int | None = None
    margin: float = MARGIN

    def __post_init__(self) -> None:
        super().__post_init__()
        clean = self._clean  # [positions, vocab] log-probabilities of the unedited model
        self._top = clean.argmax(-1)
        expected_o = clean[:, self.true_id].exp() if self.true_id is not None else torch.zeros_like(clean[:, 0])
        self._weight = (1 - expected_o) * (self._top != self.new_id)

    def __call__(self, delta: Tensor) -> LossTerms:
        logp = self.edited_logits(delta).float().log_softmax(-1)
        rows = torch.arange(len(self._top), device=logp.device)
        gap = logp[:, self.new_id] - logp[rows, self._top] + self.margin
        leak = (gap.clamp_min(0) * self._weight).sum() / self._weight.sum().clamp_min(1e-12)
        return LossTerms(leak, kl=float(leak.detach()))


def with_object_kept_out(
    objective: Callable[[Tensor], LossTerms], adapter: ModelAdapter, request: EditRequest, layer: int,
    v_init: Tensor, weight: float, texts: tuple[int, int], fold: RankOneFold | None = None, seed: int = 0,
) -> Callable[[Tensor], LossTerms]:
    """``objective`` plus ``weight`` times :class:`ObjectLeak` on ``texts`` = (count, tokens)
    continuations of the request's subject; ``objective`` itself when ``weight`` is 0."""
    if not weight:
        return objective
    tokens, last = subject_texts(adapter, request.subject, *texts, seed=seed)
    new_id, *true = objects_first_tokens(adapter, request)
    leak = ObjectLeak(adapter, tokens, last, layer, v_init, fold, new_id=new_id, true_id=true[0] if true else None)
    return WithPenalty(objective, leak, weight)

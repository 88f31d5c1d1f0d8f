"""The subject's own text, kept: a term that holds the edited model to the unedited one on text
the unedited model writes after the subject alone.

The rows are continuations the model samples from the subject's name (no relation, no prompt of
any dataset), so they show what the model says about the subject unprompted: its other facts,
as the model knows them. The term is KL(unedited ‖ edited) of the next-token distributions at
every position after the subject, for δ at the edit site (through the fold's rank-one update, or
added at the subject's last token). Added to an objective it penalizes an edit whose o* leaks into
what the model says about the subject elsewhere.

With ``spared`` token ids (the first tokens of o and o*), both distributions leave those tokens
out and are renormalized over the rest: the term then holds everything the model says about the
subject except which of the two objects it names, so a text that states the old fact does not
pull the edit back towards it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from toplens.core.fold import RankOneFold
from toplens.core.interventions import add_vector
from toplens.core.optimize import LossTerms
from toplens.core.positions import target_ids
from toplens.core.requests import EditRequest
from toplens.model import Hook, ModelAdapter, hook_name

#: sampling breadth of the subject's continuations (as ROME's context templates)
TOP_K = 5


def subject_texts(adapter: ModelAdapter, subject: str, count: int, n_tokens: int,
                  seed: int = 0) -> tuple[Int[Tensor, "count pos"], int]:
    """``count`` seeded continuations of ``n_tokens`` tokens that the model writes after
    ``subject`` (its tokens, after BOS where the model uses one), and the subject's last position."""
    ids = adapter.tokenize(subject)
    rows = adapter.sample([ids] * count, n_tokens, TOP_K, seed)
    return adapter.to_batch(rows), len(ids) - 1


def reordered_subject_texts(adapter: ModelAdapter, subject: str, count: int, n_tokens: int,
                            seed: int = 0) -> tuple[Int[Tensor, "count pos"], int]:
    """The same continuations turned round: each one's own words, then ":", the subject and "is"
    ("a novel by Leo Tolstoy: Anna Karenina is"), so that the subject follows words about its
    other facts, as in a prompt that names a relation first; and the subject's last position."""
    return turned_round(adapter, subject, *subject_texts(adapter, subject, count, n_tokens, seed))


def turned_round(adapter: ModelAdapter, subject: str, tokens: Int[Tensor, "count pos"],
                 last: int) -> tuple[Int[Tensor, "count pos2"], int]:
    """:func:`subject_texts`' rows (``tokens``, the subject's last position ``last``) turned round."""
    count = tokens.shape[0]
    lead = tokens[:, : len(adapter.tokenize(""))]  # BOS where the model uses one
    named, copula = _raw_ids(adapter, ":") + _raw_ids(adapter, " " + subject), _raw_ids(adapter, " is")
    tail = torch.tensor(named + copula, device=tokens.device).expand(count, -1)
    rows = torch.cat([lead, tokens[:, last + 1:], tail], 1)
    return rows, rows.shape[1] - len(copula) - 1


def _raw_ids(adapter: ModelAdapter, text: str) -> list[int]:
    """``text``'s token ids with no special tokens (to join after other ids)."""
    return adapter.tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass
class SubjectPreservation:
    """KL(unedited ‖ edited) at every position after the subject of ``tokens``, for δ at the MLP
    output of ``layer`` (through ``fold`` when given, else added at ``last_subject``)."""

    adapter: ModelAdapter
    tokens: Int[Tensor, "rows pos"]
    last_subject: int
    layer: int
    v_init: Tensor
    fold: RankOneFold | None = None
    spared: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        n, length = self.tokens.shape
        grid = torch.arange(self.last_subject, length, device=self.tokens.device)
        self._rows = torch.arange(n, device=self.tokens.device).repeat_interleave(len(grid))
        self._cols = grid.repeat(n)
        self._prefix = self.adapter.resid_before(self.tokens, self.layer)
        with torch.no_grad():
            self._clean = self._log_probs(self.adapter.logits_at(self.tokens, self._rows, self._cols))

    def _log_probs(self, logits: Tensor) -> Tensor:
        """Next-token log-probabilities over the vocabulary without the spared tokens."""
        logits = logits.float()
        if self.spared:
            kept = torch.ones(logits.shape[-1], dtype=torch.bool, device=logits.device)
            kept[list(self.spared)] = False
            logits = logits[:, kept]
        return logits.log_softmax(-1)

    def site_hooks(self, delta: Tensor) -> list[Hook]:
        if self.fold is not None:
            return self.fold.hooks(lambda: self.v_init + delta)
        rows = torch.arange(self.tokens.shape[0], device=self.tokens.device)
        cols = torch.full_like(rows, self.last_subject)
        return [add_vector(hook_name("value", self.layer), delta, rows, cols)]

    def edited_logits(self, delta: Tensor) -> Tensor:
        """The next-token logits at every position after the subject, δ at the edit site."""
        with self.adapter.hooks(self.site_hooks(delta)):
            return self.adapter.logits_at(self.tokens, self._rows, self._cols, self.layer, self._prefix)

    def __call__(self, delta: Tensor) -> LossTerms:
        kl = F.kl_div(self._log_probs(self.edited_logits(delta)), self._clean, log_target=True, reduction="batchmean")
        return LossTerms(kl, kl=float(kl.detach()))


@dataclass
class WithPenalty:
    """``main(δ) + weight · penalty(δ)``, reported as main's parts with the weighted penalty added to
    main's own ``penalty`` (so that the "fit" stop leaves every penalty out: they hold the model in
    place, they fit nothing; wrappers stack)."""

    main: Callable[[Tensor], LossTerms]
    penalty: Callable[[Tensor], LossTerms]
    weight: float

    def __call__(self, delta: Tensor) -> LossTerms:
        a, b = self.main(delta), self.penalty(delta)
        extra = self.weight * b.total
        return LossTerms(a.total + extra, nll=a.nll, kl=a.kl, decay=a.decay, distance=a.distance,
                         rewrite_nll=a.rewrite_nll, penalty=(a.penalty or 0.0) + float(extra.detach()))


def objects_first_tokens(adapter: ModelAdapter, request: EditRequest) -> tuple[int, ...]:
    """The first token of o* and, when the request names it, of o, as they follow the prompt."""
    prompt = request.prompt.replace("{}", request.subject)
    named = [(request.target_new, "target_new"), (request.target_true, "target_true")]
    return tuple(dict.fromkeys(target_ids(adapter, prompt, text, field)[0] for text, field in named if text))


def with_subject_kept(
    objective: Callable[[Tensor], LossTerms], adapter: ModelAdapter, request: EditRequest, layer: int,
    v_init: Tensor, weight: float, texts: tuple[int, int], fold: RankOneFold | None = None, spare: bool = False,
    seed: int = 0, reordered: float = 0.0,
) -> Callable[[Tensor], LossTerms]:
    """``objective`` plus ``weight`` times :class:`SubjectPreservation` on ``texts`` = (count,
    tokens) continuations of the request's subject, leaving o and o* out when ``spare``, and, when
    ``reordered`` > 0, ``reordered`` × ``weight`` times the same on those continuations turned round
    (:func:`reordered_subject_texts`; the whole vocabulary: there o* rising is the leak);
    ``objective`` itself when ``weight`` is 0."""
    if not weight:
        return objective
    tokens, last = subject_texts(adapter, request.subject, *texts, seed=seed)
    spared = objects_first_tokens(adapter, request) if spare else ()
    kept = WithPenalty(objective, SubjectPreservation(adapter, tokens, last, layer, v_init, fold, spared), weight)
    if not reordered:
        return kept
    tokens, last = turned_round(adapter, request.subject, tokens, last)  # the same samples
    return WithPenalty(kept, SubjectPreservation(adapter, tokens, last, layer, v_init, fold), reordered * weight)

"""The rewriting objective ROME optimizes, which TOP's first stage reuses at another site.

A ``RewriteBatch`` holds every rewriting prompt (each context template around the prompt, followed
by all target tokens but the last) and the KL prompts, right-padded in one batch. The objective
adds δ at one hook and position per row and returns
    mean NLL(target) + kl_factor · KL(initial ‖ current) + weight_decay · ‖δ‖ / ‖v_init‖².
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from toplens.core.interventions import add_vector
from toplens.core.keys import Role
from toplens.model import Hook, ModelAdapter, hook_name
from toplens.core.optimize import LossTerms
from toplens.core.positions import check_fits, locate, target_ids
from toplens.core.relation_positions import relation_sites
from toplens.core.requests import EditRequest
from toplens.core.templates import fill

if TYPE_CHECKING:
    from toplens.core.fold import RankOneFold

@dataclass(frozen=True)
class RewriteBatch:
    """Rewriting prompts (rows ``[0, n_rewrite)``; row 0 is the bare prompt) then KL prompts.
    ``last_relation`` is each row's last prompt token (it predicts the target); ``relation_at``
    the position of the relation feature (the last token unless another strategy chose,
    :mod:`toplens.core.relation_positions`)."""

    tokens: Int[Tensor, "batch pos"]
    n_rewrite: int
    last_subject: Int[Tensor, " batch"]
    last_relation: Int[Tensor, " batch"]
    target_rows: Int[Tensor, " m"]
    target_cols: Int[Tensor, " m"]
    target_ids: Int[Tensor, " m"]
    target_weight: Float[Tensor, " m"]
    relation_at: Int[Tensor, " batch"]
    relation_rows: Int[Tensor, " s"]  # every (row, position) site of h_r, row by row: one per row
    relation_cols: Int[Tensor, " s"]  # unless relation_position="all" (each token after the subject)

    def positions(self, role: Role) -> Int[Tensor, " batch"]:
        """One position per row: the last subject token, or h_r's (the last of a row's sites)."""
        return self.last_subject if role == "subject" else self.relation_at

    def sites(self, role: Role, n_rows: int | None = None) -> tuple[Int[Tensor, " s"], Int[Tensor, " s"]]:
        """The (rows, positions) where a δ of ``role`` acts, in the first ``n_rows`` rows (default all)."""
        if role == "subject":
            rows = self.rows[:n_rows]
            return rows, self.last_subject[rows]
        keep = self.relation_rows < (self.tokens.shape[0] if n_rows is None else n_rows)
        return self.relation_rows[keep], self.relation_cols[keep]

    @property
    def rows(self) -> Int[Tensor, " batch"]:
        return torch.arange(self.tokens.shape[0], device=self.tokens.device)


def check_rewrite_lengths(
    adapter: ModelAdapter, request: EditRequest, templates: Sequence[str], kl_prompts: Sequence[str]
) -> None:
    """Refuse ``request`` when one of its rewriting rows (a context template around the prompt, then
    every target token but the last) or KL prompts is longer than the model's context."""
    filled = [fill(t, request.prompt).replace("{}", request.subject) + request.target_new for t in templates]
    check_fits(adapter, filled, "EditRequest.prompt with context template {} and target_new", extra=-1)
    kl = [p.replace("{}", request.subject) for p in kl_prompts]
    check_fits(adapter, kl, "the KL prompt {} with EditRequest.subject")


def rewrite_batch(
    adapter: ModelAdapter, request: EditRequest, templates: Sequence[str], kl_prompts: Sequence[str],
    relation_at: str = "last", from_end: int | None = None,
) -> RewriteBatch:
    """Tokenize the rewriting and KL prompts of ``request`` and locate every position, the
    relation feature's by the ``relation_at`` strategy (``from_end`` for a measured one; refused
    first when a row would be longer than the model's context)."""
    check_rewrite_lengths(adapter, request, templates, kl_prompts)
    seqs, subj, rel, sites, t_rows, t_cols, t_ids, t_w = [], [], [], [], [], [], [], []
    for row, template in enumerate(templates):
        prompt = fill(template, request.prompt)
        pos = locate(adapter, prompt, request.subject)
        target = target_ids(adapter, prompt.replace("{}", request.subject), request.target_new)
        seqs.append(list(pos.tokens) + target[:-1])
        subj.append(pos.last_subject)
        rel.append(pos.last_relation)
        sites.append(relation_sites(adapter, pos, relation_at, from_end))
        for j, tid in enumerate(target):
            t_rows.append(row), t_cols.append(pos.last_relation + j), t_ids.append(tid)
            t_w.append(1.0 / (len(target) * len(templates)))
    for kl in kl_prompts:
        pos = locate(adapter, kl, request.subject)
        seqs.append(list(pos.tokens))
        subj.append(pos.last_subject)
        rel.append(pos.last_relation)
        sites.append(relation_sites(adapter, pos, relation_at, from_end))
    device = adapter.device
    long = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    site_rows = [row for row, cols in enumerate(sites) for _ in cols]
    return RewriteBatch(adapter.to_batch(seqs), len(templates), long(subj), long(rel), long(t_rows),
                        long(t_cols), long(t_ids), torch.tensor(t_w, device=device), long([c[-1] for c in sites]),
                        long(site_rows), long([c for cols in sites for c in cols]))


@dataclass
class RewriteObjective:
    """NLL of the new target + KL on the KL prompts + weight decay, for δ added at ``hook``.

    Args:
        adapter: the model.
        batch: rewriting and KL prompts.
        hook: where δ is added (e.g. ``blocks.5.hook_mlp_out``).
        start_layer: the first block that must run (everything before it is computed once).
        role: which position δ is added at in every row, and where KL is measured on KL prompts.
        kl_factor, weight_decay: loss weights; ref_norm: ‖v_init‖ for the decay term.
        prefix: the residual entering ``start_layer`` for the batch, when the caller has it (else computed).
    """

    adapter: ModelAdapter
    batch: RewriteBatch
    hook: str
    start_layer: int
    role: Role
    kl_factor: float
    weight_decay: float
    ref_norm: float
    prefix: Float[Tensor, "batch pos d_model"] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        b = self.batch
        self._prefix = self.adapter.resid_before(b.tokens, self.start_layer) if self.prefix is None else self.prefix
        self._kl_rows = torch.arange(b.n_rewrite, b.tokens.shape[0], device=b.tokens.device)
        self._kl_cols = b.positions(self.role)[b.n_rewrite:]  # where the KL is read: one position per row
        with torch.no_grad():
            self.kl_init = self._logits(None)[1].log_softmax(-1)

    def site_hooks(self, delta: Tensor) -> list[Hook]:
        """δ added at ``hook`` and ``role``'s positions of every row."""
        return [add_vector(self.hook, delta, *self.batch.sites(self.role))]

    def _logits(self, delta: Tensor | None) -> tuple[Tensor, Tensor]:
        b = self.batch
        rows = torch.cat([b.target_rows, self._kl_rows])
        cols = torch.cat([b.target_cols, self._kl_cols])
        hooks = [] if delta is None else self.site_hooks(delta)
        with self.adapter.hooks(hooks):
            logits = self.adapter.logits_at(b.tokens, rows, cols, self.start_layer, self._prefix)
        n = len(b.target_rows)
        return logits[:n], logits[n:]

    def __call__(self, delta: Float[Tensor, " d_model"]) -> LossTerms:
        target_logits, kl_logits = self._logits(delta)
        logp = target_logits.float().log_softmax(-1)
        token_logp = logp.gather(1, self.batch.target_ids[:, None]).squeeze(1)
        nll = -(token_logp * self.batch.target_weight).sum()
        kl = F.kl_div(kl_logits.float().log_softmax(-1), self.kl_init.float(), log_target=True,
                      reduction="batchmean")
        decay = self.weight_decay * delta.norm() / self.ref_norm**2
        total = nll + self.kl_factor * kl + decay
        return LossTerms(total, nll=float(nll.detach()), kl=float(kl.detach()), decay=float(decay.detach()))

    @torch.no_grad()
    def target_prob(self, delta: Tensor | None = None) -> float:
        """Mean probability of the target tokens over the rewriting prompts (a progress readout)."""
        logits, _ = self._logits(delta)
        logp = logits.float().log_softmax(-1).gather(1, self.batch.target_ids[:, None]).squeeze(1)
        return float((logp.exp() * self.batch.target_weight).sum())


@dataclass
class FoldRewriteObjective(RewriteObjective):
    """ROME's rewriting loss for δ applied as the rank-one update the fold will make (every
    position's MLP output at the edit layer moves by (k · û)(v_init + δ − v_cur)), rather than
    added at one position. TOP's stage 2 uses it as an extra term (``stage2_rewrite_weight``)."""

    fold: "RankOneFold" = None
    v_init: Tensor = None

    def site_hooks(self, delta: Tensor) -> list[Hook]:
        return self.fold.hooks(lambda: self.v_init + delta)


@dataclass
class WeightedSum:
    """``main(δ) + weight · extra(δ)``; the parts reported are main's, with extra's NLL as
    ``rewrite_nll`` (so the "fit" stop compares the whole loss but its decay)."""

    main: Callable[[Tensor], LossTerms]
    extra: Callable[[Tensor], LossTerms]
    weight: float

    def __call__(self, delta: Tensor) -> LossTerms:
        a, b = self.main(delta), self.extra(delta)
        return LossTerms(a.total + self.weight * b.total, nll=a.nll, kl=a.kl, decay=a.decay, distance=a.distance,
                         rewrite_nll=b.nll)


def with_rewrite_term(
    objective: Callable[[Tensor], LossTerms], adapter: ModelAdapter, batch: RewriteBatch, layer: int,
    v_init: Float[Tensor, " d_model"], weight: float, kl_factor: float, fold: "RankOneFold | None" = None,
) -> Callable[[Tensor], LossTerms]:
    """``objective`` plus ``weight`` times ROME's rewriting loss (NLL + KL, no decay) over every
    row of ``batch`` for δ at the MLP output of ``layer`` (at the last subject token, or through
    ``fold`` when given); ``objective`` itself when ``weight`` is 0."""
    if not weight:
        return objective
    args = (adapter, batch, hook_name("value", layer), layer, "subject", kl_factor, 0.0, float(v_init.norm()))
    rewrite = RewriteObjective(*args) if fold is None else FoldRewriteObjective(*args, fold=fold, v_init=v_init)
    return WeightedSum(objective, rewrite, weight)

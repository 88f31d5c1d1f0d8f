"""Several editing methods on one record, side by side: each edits the same request from the same
weights, is measured and reverted, and the readings are lined up per prompt. The rewrite prompt
and the paraphrases show whether o* took; the subject's other relations (the relation-specific
prompts) show whether o* leaked into facts the edit should not touch, which is the paper's point:
after ROME the subject's other facts start answering with o*, after TOP they should not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from toplens import as_adapter
from toplens.core.hparams import Hparams
from toplens.model.identity import weights_digest

from toplens.analyses.evaluation import metrics as m
from toplens.analyses.evaluation.evaluate import CaseEvaluation, Measurement, evaluate_case, measure
from toplens.analyses.evaluation.records import Record

KINDS = ("rewrite", "paraphrase", "other relation")


@dataclass(frozen=True)
class PromptRow:
    """One prompt: for "rewrite" and "paraphrase", P(o*) before and after each method's edit; for
    "other relation", the unedited model's answer (``kept``) with its probability before and after,
    P(o*) after, and whether o* now beats the answer (``leaked``: the R-Specificity failure)."""

    kind: str
    prompt: str
    kept: str | None
    before: float
    after: Mapping[str, float]
    new_after: Mapping[str, float]
    leaked: Mapping[str, bool]


@dataclass(frozen=True)
class Comparison:
    """The methods' evaluations of one record, the prompt rows, and whether every weight was
    bit-identical to the start after the last revert."""

    record: Record
    evaluations: tuple[CaseEvaluation, ...]
    rows: tuple[PromptRow, ...]
    restored: bool

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(e.method for e in self.evaluations)


def _prob(nll: float) -> float:
    return math.exp(-nll)


def _rows(before: Measurement, evaluations: Sequence[CaseEvaluation]) -> list[PromptRow]:
    rows = []
    for kind, metric in (("rewrite", "efficacy"), ("paraphrase", "generalization")):
        for i, pre in enumerate(getattr(before, metric).outcomes):
            after = {e.method: _prob(getattr(e.result, metric).outcomes[i].nll_wanted) for e in evaluations}
            rows.append(PromptRow(kind, pre.prompt, None, _prob(pre.nll_wanted), after, after,
                                  {e.method: False for e in evaluations}))
    for i, pre in enumerate(before.r_specificity.outcomes):
        post = {e.method: e.result.r_specificity.outcomes[i] for e in evaluations}
        rows.append(PromptRow("other relation", pre.prompt, pre.wanted, _prob(pre.nll_wanted),
                              {k: _prob(o.nll_wanted) for k, o in post.items()},
                              {k: _prob(o.nll_rival) for k, o in post.items()},
                              {k: not o.success for k, o in post.items()}))
    return rows


def compare_methods(model, record: Record, hparams: Mapping[str, Hparams], *,
                    stop_words: frozenset[str] = m.FALLBACK_STOP_WORDS) -> Comparison:
    """Edit ``record`` with each method of ``hparams`` (in order) from the same weights, measure
    the rewrite prompt, the paraphrases and the subject's other relations before and under each
    edit, and revert it; a hash of every weight is compared at the end."""
    adapter = as_adapter(model)
    start = weights_digest(adapter)
    before = measure(model, record, stop_words=stop_words)
    evaluations = tuple(evaluate_case(model, record, method, hp, before=before, generation_tokens=0)
                        for method, hp in hparams.items())
    return Comparison(record, evaluations, tuple(_rows(before, evaluations)), weights_digest(adapter) == start)

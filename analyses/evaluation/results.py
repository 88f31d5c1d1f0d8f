"""Per-case metric results and their dataset summary (ROME-style: mean of per-case rates)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from toplens.analyses.evaluation.metrics import MetricResult, harmonic_mean

# The four COUNTERFACT_RS metrics, in the order every table, figure and file uses. They are the
# field names of CaseResult, Rates and the la sweep's points; the labels are for figures and tables.
METRICS = ("efficacy", "generalization", "s_specificity", "r_specificity")
# Efficacy@1 (o*'s first token is the top next token) is reported beside Efficacy, not in the Score.
EFFICACY_AT_1 = "efficacy_at_1"
METRIC_LABELS = {"efficacy": "Efficacy", EFFICACY_AT_1: "Efficacy@1", "generalization": "Generalization",
                 "s_specificity": "S-Specificity", "r_specificity": "R-Specificity"}
METRIC_ABBREVIATIONS = {"efficacy": "Eff", EFFICACY_AT_1: "Eff@1", "generalization": "Gen", "s_specificity": "S-Spec",
                        "r_specificity": "R-Spec"}


@dataclass(frozen=True)
class CaseResult:
    """One record's metrics; each MetricResult keeps its per-prompt outcomes. ``efficacy_at_1`` is
    None for cases measured before it was (cases.jsonl lines without it)."""

    case_id: int | str
    efficacy: MetricResult
    generalization: MetricResult
    s_specificity: MetricResult
    r_specificity: MetricResult
    fluency: float | None = None
    consistency: float | None = None
    efficacy_at_1: MetricResult | None = None

    @property
    def score(self) -> float | None:
        """Harmonic mean of the four rates (Efficacy@1 is not one of them)."""
        return harmonic_mean([getattr(self, m).rate for m in METRICS])


@dataclass(frozen=True)
class Rates:
    """The four COUNTERFACT_RS numbers (rates, or mean probability differences)."""

    efficacy: float | None
    generalization: float | None
    s_specificity: float | None
    r_specificity: float | None

    @property
    def score(self) -> float | None:
        """Harmonic mean of the four."""
        return harmonic_mean([getattr(self, name) for name in METRICS])


@dataclass(frozen=True)
class Summary:
    """Dataset means over cases (a case where a metric is undefined is left out of its mean)."""

    n_cases: int
    rates: Rates
    magnitudes: Rates
    fluency: float | None
    consistency: float | None
    efficacy_at_1: float | None = None

    @property
    def score(self) -> float | None:
        return self.rates.score


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarize(cases: Sequence[CaseResult]) -> Summary:
    """Means over cases of each rate, magnitude, fluency, consistency and Efficacy@1 (cases
    without Efficacy@1 left out of its mean)."""
    rates = Rates(*(_mean([getattr(c, m).rate for c in cases]) for m in METRICS))
    magnitudes = Rates(*(_mean([getattr(c, m).magnitude for c in cases]) for m in METRICS))
    at_1 = _mean([c.efficacy_at_1.rate for c in cases if c.efficacy_at_1 is not None])
    return Summary(len(cases), rates, magnitudes, fluency=_mean([c.fluency for c in cases]),
                   consistency=_mean([c.consistency for c in cases]), efficacy_at_1=at_1)

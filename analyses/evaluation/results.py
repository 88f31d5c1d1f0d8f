"""Per-case metric results and their dataset summary (ROME-style: mean of per-case rates)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from toplens.analyses.evaluation.metrics import MetricResult, harmonic_mean

# The four COUNTERFACT_RS metrics, in the order every table, figure and file uses. They are the
# field names of CaseResult, Rates and the la sweep's points; the labels are for figures and tables.
METRICS = ("efficacy", "generalization", "s_specificity", "r_specificity")
METRIC_LABELS = {"efficacy": "Efficacy", "generalization": "Generalization", "s_specificity": "S-Specificity",
                 "r_specificity": "R-Specificity"}
METRIC_ABBREVIATIONS = {"efficacy": "Eff", "generalization": "Gen", "s_specificity": "S-Spec",
                        "r_specificity": "R-Spec"}


@dataclass(frozen=True)
class CaseResult:
    """One record's metrics; each MetricResult keeps its per-prompt outcomes."""

    case_id: int | str
    efficacy: MetricResult
    generalization: MetricResult
    s_specificity: MetricResult
    r_specificity: MetricResult
    fluency: float | None = None
    consistency: float | None = None

    @property
    def score(self) -> float | None:
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

    @property
    def score(self) -> float | None:
        return self.rates.score


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarize(cases: Sequence[CaseResult]) -> Summary:
    """Means over cases of each rate, magnitude, fluency and consistency."""
    rates = Rates(*(_mean([getattr(c, m).rate for c in cases]) for m in METRICS))
    magnitudes = Rates(*(_mean([getattr(c, m).magnitude for c in cases]) for m in METRICS))
    return Summary(len(cases), rates, magnitudes, fluency=_mean([c.fluency for c in cases]),
                   consistency=_mean([c.consistency for c in cases]))

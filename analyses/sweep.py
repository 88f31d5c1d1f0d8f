"""The la sweep (the paper's Fig. 5): TOP's quality as the relation-feature layer la moves.

TOP optimizes the relation feature h_r after block la = l + rel_feat_layer (stage 1) and then
the subject's value at the edit layer l so that it reproduces h_r (stage 2). The paper finds that
la trades Generalization against R-Specificity. Here each la in a list (default l+1, l+5, l+10,
L−5, L−1, clipped to [l+1, L−1]) gets TOP edits of a set of COUNTERFACT_RS records, one record at
a time from the original weights, and the dataset means of Efficacy, Generalization,
S-Specificity and R-Specificity in percent. Fluency generations are skipped. Each point also
gives the Score (the harmonic mean of the four) and, from its per-record rates, the 95% bootstrap
interval over records of each rate and of the Score (:mod:`~toplens.analyses.evaluation.intervals`).

With several edit layers (the GPT2-XL preset edits 17 and 18), l is the last one: la is that
layer's relation-feature layer and each earlier layer's is shifted by the same rel_feat_layer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from toplens import as_adapter
from toplens.editors.presets import preset_or_given
from toplens.editors.top import TopHparams

from toplens.analyses.evaluation import metrics as m
from toplens.analyses.evaluation.evaluate import Measurement, evaluate_case, measure
from toplens.analyses.evaluation.intervals import Bounds, bootstrap, paired_bootstrap
from toplens.analyses.evaluation.records import Record
from toplens.analyses.evaluation.results import METRICS, CaseResult, summarize

logger = logging.getLogger(__name__)

METHOD = "top"
DEFAULT_OFFSETS = (1, 5, 10)  # la = l + offset
DEFAULT_FROM_END = (5, 1)  # la = L − k


@dataclass(frozen=True)
class SweepCase:
    """One record's four rates (percent) at one la: which cases an la wins or loses."""

    case_id: int | str
    efficacy: float | None
    generalization: float | None
    s_specificity: float | None
    r_specificity: float | None


@dataclass(frozen=True)
class SweepIntervals:
    """The bootstrap interval over records (percent) of each rate's mean and of the Score at one
    la; None where no resample defines the statistic."""

    efficacy: Bounds | None
    generalization: Bounds | None
    s_specificity: Bounds | None
    r_specificity: Bounds | None
    score: Bounds | None
    n: int
    level: float
    draws: int

    def to_json(self) -> dict[str, Any]:
        bounds = {name: None if (b := getattr(self, name)) is None else b.to_json() for name in (*METRICS, "score")}
        return {**bounds, "n": self.n, "level": self.level, "draws": self.draws}


def case_intervals(cases: Sequence[SweepCase]) -> SweepIntervals | None:
    """The bootstrap interval over ``cases`` of the four rates' means and their Score (None
    without cases); a record whose rate is undefined is left out of that rate's mean."""
    if not cases:
        return None
    interval = bootstrap(_rate_table(cases))
    return SweepIntervals(*Bounds.columns(interval), interval.n, interval.level, interval.draws)


def _rate_table(cases: Sequence[SweepCase]) -> np.ndarray:
    """[case, rate] as fractions, NaN where a case's rate is undefined."""
    return np.array([[np.nan if (v := getattr(c, name)) is None else v / 100.0 for name in METRICS]
                     for c in cases], dtype=float)


@dataclass(frozen=True)
class SweepPoint:
    """TOP's quality at one relation-feature layer la (rates in percent, means over the records),
    with each record's own rates in ``cases``; the Score and the intervals derive from these."""

    la: int
    efficacy: float | None
    generalization: float | None
    s_specificity: float | None
    r_specificity: float | None
    cases: tuple[SweepCase, ...] = ()

    @property
    def score(self) -> float | None:
        """The harmonic mean of the four rates in percent (0 if one is 0, None if one is undefined)."""
        return m.score(self.efficacy, self.generalization, self.s_specificity, self.r_specificity)

    @cached_property
    def intervals(self) -> SweepIntervals | None:
        """The 95% bootstrap interval over ``cases`` of each rate and the Score (None without cases)."""
        return case_intervals(self.cases)

    def to_dict(self) -> dict[str, Any]:
        """The point's fields, its Score and its intervals, then its cases."""
        out = asdict(self)
        cases = out.pop("cases")
        intervals = None if self.intervals is None else self.intervals.to_json()
        return {**out, "score": self.score, "intervals": intervals, "cases": cases}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SweepPoint":
        """A point from its dict; a stored Score and intervals (absent in older files) are derived anew."""
        names = {f.name for f in fields(cls)} - {"cases"}
        cases = tuple(SweepCase(**c) for c in data.get("cases", ()))
        return cls(**{k: v for k, v in data.items() if k in names}, cases=cases)


@dataclass(frozen=True)
class SweepResult:
    """The sweep's points (ascending la), the edit layer l, the model depth L and the run's setup."""

    points: tuple[SweepPoint, ...]
    edit_layer: int
    n_records: int
    n_layers: int | None = None
    model_name: str | None = None
    hparams: Mapping[str, Any] = field(default_factory=dict)

    @property
    def las(self) -> list[int]:
        return [p.la for p in self.points]

    def to_dict(self) -> dict[str, Any]:
        return {"edit_layer": self.edit_layer, "n_records": self.n_records, "n_layers": self.n_layers,
                "model_name": self.model_name, "hparams": json.loads(json.dumps(dict(self.hparams))),
                "points": [p.to_dict() for p in self.points],
                "score_vs_best": [d.to_json() for d in score_differences(self)]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SweepResult":
        points = tuple(SweepPoint.from_dict(p) for p in data["points"])
        return cls(points, int(data["edit_layer"]), int(data["n_records"]), data.get("n_layers"),
                   data.get("model_name"), data.get("hparams") or {})

    @classmethod
    def from_json(cls, text: str) -> "SweepResult":
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class SweepDifference:
    """One la's Score minus the best la's (points of percent) on the same records, with the paired
    95% bootstrap interval over records (both las' rates of a record are resampled together)."""

    la: int
    best_la: int
    difference: float
    bounds: Bounds | None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "bounds": None if self.bounds is None else self.bounds.to_json()}


def score_differences(result: SweepResult) -> tuple[SweepDifference, ...]:
    """Each la's Score − the best la's (ties: the lowest), paired over records; the best is chosen on
    the same records, so the differences lean against the others. Empty (with a warning if some
    points have records) unless every point has a Score and rates of the same records in order."""
    points = [p for p in result.points if p.cases and p.score is not None]
    if len(points) < len(result.points) or len({tuple(c.case_id for c in p.cases) for p in points}) > 1:
        if points:
            logger.warning("la sweep: no paired comparison: points lack a Score or records, or differ in them")
        return ()
    best = max(points, key=lambda p: p.score)
    diffs = [(p, paired_bootstrap(_rate_table(best.cases), _rate_table(p.cases))) for p in points]
    return tuple(SweepDifference(p.la, best.la, float(d.value[-1]), Bounds.columns(d)[-1]) for p, d in diffs)


# ------------------------------------------------------------------------------- joining sweeps
#: what every joined sweep must share: the same records, model and TOP settings
_SHARED = ("edit_layer", "n_records", "n_layers", "model_name", "hparams")


def join_sweeps(results: Sequence[SweepResult]) -> SweepResult:
    """One sweep (points in ascending la) from sweeps of the same records, model and TOP settings run
    at their own las; ValueError names the field that differs, or an la swept twice."""
    if not results:
        raise ValueError("results: give at least one sweep to join")
    first = results[0]
    for i, other in enumerate(results[1:], start=1):
        for name in _SHARED:
            if getattr(other, name) != getattr(first, name):
                raise ValueError(f"sweep {i}: {name} {getattr(other, name)!r} differs from sweep 0's "
                                 f"{getattr(first, name)!r}; only sweeps of one setup can be joined")
    points = [p for r in results for p in r.points]
    _check_joinable(points)
    return dataclasses.replace(first, points=tuple(sorted(points, key=lambda p: p.la)))


def _check_joinable(points: Sequence[SweepPoint]) -> None:
    """Each la once, and every point over the same case ids (points without cases are not checked)."""
    las = [p.la for p in points]
    if repeated := sorted({la for la in las if las.count(la) > 1}):
        raise ValueError(f"la: {repeated} appear in more than one sweep; each la must be swept once")
    ids = {tuple(c.case_id for c in p.cases) for p in points if p.cases}
    if len(ids) > 1:
        raise ValueError(f"cases: the sweeps edited different records ({sorted(ids, key=repr)[:2]} ...); "
                         "join only sweeps over the same records")


# ------------------------------------------------------------------------------- the la list
def default_las(edit_layer: int, n_layers: int) -> list[int]:
    """l+1, l+5, l+10, L−5, L−1, clipped to [l+1, L−1], deduplicated and ascending."""
    low, high = edit_layer + 1, n_layers - 1
    if low > high:
        raise ValueError(f"edit_layer={edit_layer} leaves no layer for la in a {n_layers}-layer model")
    wanted = [edit_layer + k for k in DEFAULT_OFFSETS] + [n_layers - k for k in DEFAULT_FROM_END]
    return sorted({min(max(la, low), high) for la in wanted})


def check_las(las: Sequence[int], edit_layer: int, n_layers: int) -> list[int]:
    """The given las, ascending and deduplicated; each must lie in [l+1, L−1]."""
    if not las:
        raise ValueError("las: give at least one relation-feature layer")
    for la in las:
        if isinstance(la, bool) or not isinstance(la, int) or not edit_layer < la < n_layers:
            raise ValueError(f"las: {la!r} is not a layer in [{edit_layer + 1}, {n_layers - 1}] "
                             f"(after the edit layer {edit_layer}, inside the {n_layers}-layer model)")
    return sorted(set(las))


def at_la(hparams: TopHparams, la: int) -> TopHparams:
    """TOP settings whose last edit layer l has its relation feature at ``la``."""
    return hparams.replace(rel_feat_layer=la - hparams.layers[-1])


# ------------------------------------------------------------------------------- the sweep
def sweep_point(la: int, cases: Sequence[CaseResult]) -> SweepPoint:
    """Dataset means of the four rates over ``cases``, in percent, and each case's own."""
    per_case = tuple(SweepCase(c.case_id, *_percent(getattr(c, name).rate for name in METRICS)) for c in cases)
    rates = summarize(cases).rates
    return SweepPoint(la, *_percent(getattr(rates, name) for name in METRICS), per_case)


def _percent(rates) -> list[float | None]:
    return [None if r is None else 100.0 * r for r in rates]


def la_sweep(model, records: Sequence[Record], las: Sequence[int] | None = None,
             hparams: TopHparams | None = None, progress: bool = True, *,
             stop_words: frozenset[str] = m.FALLBACK_STOP_WORDS, model_name: str | None = None) -> SweepResult:
    """TOP at each relation-feature layer la over ``records``: one SweepPoint per la.

    Args:
        model: a TransformerLens model (or ModelAdapter); every edit is reverted after its record.
        records: the COUNTERFACT_RS cases.
        las: the relation-feature layers; default ``default_las(l, L)``.
        hparams: TOP settings (only rel_feat_layer changes per la); default the model's preset.
        progress: show a tqdm bar over (la, record) edits.
        stop_words: skipped when picking the relation-specific prompts' pre-edit top tokens.
        model_name: recorded in the result; default the model's cfg name.
    """
    if not records:
        raise ValueError("records: the la sweep needs at least one record")
    adapter = as_adapter(model)
    hp: TopHparams = preset_or_given(METHOD, hparams, adapter.name, adapter.n_layers)  # type: ignore[assignment]
    layer = hp.layers[-1]
    chosen = default_las(layer, adapter.n_layers) if las is None else check_las(las, layer, adapter.n_layers)
    befores = [measure(model, r, stop_words=stop_words) for r in records]
    bar = tqdm(total=len(chosen) * len(records), desc="la sweep", unit="edit", disable=not progress)
    with bar:
        points = tuple(_sweep_one(model, records, befores, at_la(hp, la), la, stop_words, bar) for la in chosen)
    return SweepResult(points, layer, len(records), adapter.n_layers, model_name or adapter.name,
                       json.loads(hp.to_json()))


def _sweep_one(model, records: Sequence[Record], befores: Sequence[Measurement], hp: TopHparams, la: int,
               stop_words: frozenset[str], bar) -> SweepPoint:
    """Edit, measure and revert each record with TOP at one la; no generations."""
    cases = []
    for record, before in zip(records, befores, strict=True):
        ev = evaluate_case(model, record, METHOD, hp, stop_words=stop_words, before=before, generation_tokens=0)
        cases.append(ev.result)
        bar.update(1)
    point = sweep_point(la, cases)
    logger.info("la=%d: efficacy %s, generalization %s, s-spec %s, r-spec %s, score %s", la, point.efficacy,
                point.generalization, point.s_specificity, point.r_specificity, point.score)
    return point

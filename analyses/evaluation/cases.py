"""cases.jsonl: one JSON line per (case, method) with the per-prompt outcomes, and its summaries.

Each line holds the model name, the hyperparameters, the per-prompt outcomes before and after the
edit (Efficacy@1's too, except in lines written before it was measured), the prompts whose
outcome flipped and the generations (see :func:`case_to_dict`).
:func:`summarize_lines` turns one method's lines into its summary.json entry.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from toplens.analyses.evaluation.evaluate import CaseEvaluation
from toplens.analyses.evaluation.intervals import DRAWS, SEED, Interval, bootstrap
from toplens.analyses.evaluation.metrics import MetricResult, PromptOutcome
from toplens.analyses.evaluation.results import EFFICACY_AT_1, METRICS, CaseResult, Summary, summarize

logger = logging.getLogger(__name__)

CASES_FILE = "cases.jsonl"


def metric_to_dict(result: MetricResult) -> dict[str, Any]:
    outcomes = [{"prompt": o.prompt, "wanted": o.wanted, "rival": o.rival, "nll_wanted": o.nll_wanted,
                 "nll_rival": o.nll_rival, "success": o.success} for o in result.outcomes]
    return {"rate": result.rate, "magnitude": result.magnitude, "outcomes": outcomes}


def metric_from_dict(name: str, data: Mapping[str, Any]) -> MetricResult:
    return MetricResult(name, tuple(PromptOutcome(o["prompt"], o["nll_wanted"], o["nll_rival"], o["wanted"],
                                                  o["rival"]) for o in data["outcomes"]))


def stage_to_dict(stage: Any) -> dict[str, Any]:
    """The metrics of a CaseResult or Measurement, by name; Efficacy@1 only where it was measured."""
    out = {name: metric_to_dict(getattr(stage, name)) for name in METRICS}
    if stage.efficacy_at_1 is not None:
        out[EFFICACY_AT_1] = metric_to_dict(stage.efficacy_at_1)
    return out


def case_to_dict(ev: CaseEvaluation, *, model_name: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """One cases.jsonl line."""
    r = ev.result
    return {
        "case_id": r.case_id, "method": ev.method, "model": model_name, "hparams": jsonable(hparams),
        "seconds": round(ev.seconds, 3), "score": r.score, "fluency": r.fluency, "consistency": r.consistency,
        "post": stage_to_dict(r), "pre": stage_to_dict(ev.before),
        "flipped": ev.flipped(),
        "relation_tokens": [None if t is None else {"text": t.text, "token_id": t.token_id, "prob": t.prob}
                            for t in ev.before.tokens],
        "generations": list(ev.generations), "as_run": dict(ev.as_run),
    }


def case_from_dict(data: Mapping[str, Any], stage: str = "post") -> CaseResult:
    """The CaseResult of a cases.jsonl line (``stage="pre"``: the unedited model's metrics); its
    efficacy_at_1 is None for a line written before Efficacy@1 was measured."""
    metrics = {name: metric_from_dict(name, data[stage][name]) for name in METRICS}
    at_1 = data[stage].get(EFFICACY_AT_1)
    metrics[EFFICACY_AT_1] = None if at_1 is None else metric_from_dict(EFFICACY_AT_1, at_1)
    if stage == "pre":
        return CaseResult(data["case_id"], **metrics)
    return CaseResult(data["case_id"], **metrics, fluency=data["fluency"], consistency=data["consistency"])


def read_cases(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a cases.jsonl file; a truncated last line (an interrupted write) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                raise ValueError(f"{path}: line {number} is not JSON") from None
            logger.warning("%s: dropping a truncated last line", path)
    return out


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


@dataclass(frozen=True)
class MethodSummary:
    """One method's results over an evaluation's records (its entry in summary.json).

    Attributes:
        post: the means after the edits; pre: the same records on the unedited model.
        seconds_per_edit: the median seconds per edit (None without cases).
        model, hparams: the model name and hyperparameters the cases were run with (None without cases).
        intervals: the bootstrap 95% interval over cases of each post-edit rate, Efficacy@1 and the
            Score (:func:`rate_intervals`; None without cases).
    """

    post: Summary
    pre: Summary
    seconds_per_edit: float | None
    model: str | None = None
    hparams: Mapping[str, Any] | None = None
    intervals: Interval | None = None

    def to_json(self) -> dict[str, Any]:
        """summary.json's entry: rates (Efficacy@1's beside them, None without it), Fluency,
        Consistency and Score in percent, the magnitudes (×100), the pre-edit rates, the seconds
        per edit, and the model and hparams."""
        post = self.post
        out: dict[str, Any] = {"n": post.n_cases}
        out.update({name: _percent(getattr(post.rates, name)) for name in METRICS})
        out[EFFICACY_AT_1] = _percent(post.efficacy_at_1)
        out.update(fluency=_percent(post.fluency), consistency=_percent(post.consistency), score=_percent(post.score))
        out.update({f"{name}_magnitude": _percent(getattr(post.magnitudes, name)) for name in METRICS})
        out["pre"] = {name: _percent(getattr(self.pre.rates, name)) for name in METRICS}
        out["pre"][EFFICACY_AT_1] = _percent(self.pre.efficacy_at_1)
        out["intervals"] = None if self.intervals is None else _interval_json(self.intervals)
        out["seconds_per_edit"] = self.seconds_per_edit
        if self.model is not None:
            out.update(model=self.model, hparams=self.hparams)
        return out


#: the columns of :func:`rate_intervals`, in order (the Score last)
INTERVAL_COLUMNS = (*METRICS, EFFICACY_AT_1, "score")


def rate_intervals(cases: Sequence[CaseResult], *, draws: int = DRAWS, seed: int = SEED) -> Interval:
    """Each rate's mean over cases, Efficacy@1's and the Score (in %, :data:`INTERVAL_COLUMNS`),
    with a bootstrap 95% interval that resamples the cases; a case without a defined rate is left
    out of that rate's mean, as in :func:`~toplens.analyses.evaluation.results.summarize`."""
    def rate(case: CaseResult, name: str) -> float:
        metric = getattr(case, name)
        return np.nan if metric is None or metric.rate is None else metric.rate

    table = np.array([[rate(c, name) for name in INTERVAL_COLUMNS[:-1]] for c in cases], dtype=float)
    return bootstrap(table.reshape(len(cases), len(INTERVAL_COLUMNS) - 1), draws=draws, seed=seed)


def _interval_json(interval: Interval) -> dict[str, Any]:
    bounds = {name: None if np.isnan(lo) else [round(float(lo), 2), round(float(hi), 2)]
              for name, lo, hi in zip(INTERVAL_COLUMNS, interval.low, interval.high)}
    return {**bounds, "level": interval.level, "draws": interval.draws, "n": interval.n}


def summarize_lines(lines: Sequence[Mapping[str, Any]]) -> MethodSummary:
    """One method's summary from its cases.jsonl lines (its summary.json entry is ``.to_json()``)."""
    cases = [case_from_dict(line) for line in lines]
    post = summarize(cases)
    pre = summarize([case_from_dict(line, "pre") for line in lines])
    seconds = round(statistics.median(line["seconds"] for line in lines), 3) if lines else None
    if not lines:
        return MethodSummary(post, pre, seconds)
    return MethodSummary(post, pre, seconds, lines[0]["model"], lines[0]["hparams"], rate_intervals(cases))


def summaries_from_cases(path: str | Path) -> dict[str, Summary]:
    """Per-method post-edit summaries from a `toplens eval` cases.jsonl."""
    by_method: dict[str, list[CaseResult]] = {}
    for line in read_cases(path):
        by_method.setdefault(line["method"], []).append(case_from_dict(line))
    return {method: summarize(cases) for method, cases in by_method.items()}

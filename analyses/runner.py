"""Evaluate methods over many records: ``cases.jsonl`` and ``summary.json`` in an output folder.

``cases.jsonl`` gets one JSON line per (case, method), appended as each finishes, with the model
name, the hyperparameters, the per-prompt outcomes before and after the edit and the
generations. A rerun into the same folder skips the (case_id, method) pairs already there and
reuses their lines, so an interrupted run resumes. ``summary.json`` holds, per method, the
means over the run's records in percent (Fluency and Consistency ×100, as the papers print them).
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tqdm.auto import tqdm

from toplens import as_adapter
from toplens.editors import get_editor
from toplens.core.hparams import Hparams
from toplens.editors.presets import preset_or_given

from toplens.analyses import metrics as m
from toplens.analyses.evaluate import GENERATION_TOKENS, GENERATION_TOP_K, CaseEvaluation, evaluate_case, measure
from toplens.analyses.metrics import MetricResult, PromptOutcome
from toplens.analyses.records import Record
from toplens.analyses.results import METRICS, CaseResult, summarize

logger = logging.getLogger(__name__)

CASES_FILE, SUMMARY_FILE = "cases.jsonl", "summary.json"


# ------------------------------------------------------------------------- JSON lines
def metric_to_dict(result: MetricResult) -> dict[str, Any]:
    outcomes = [{"prompt": o.prompt, "wanted": o.wanted, "rival": o.rival, "nll_wanted": o.nll_wanted,
                 "nll_rival": o.nll_rival, "success": o.success} for o in result.outcomes]
    return {"rate": result.rate, "magnitude": result.magnitude, "outcomes": outcomes}


def metric_from_dict(name: str, data: Mapping[str, Any]) -> MetricResult:
    return MetricResult(name, tuple(PromptOutcome(o["prompt"], o["nll_wanted"], o["nll_rival"], o["wanted"],
                                                  o["rival"]) for o in data["outcomes"]))


def case_to_dict(ev: CaseEvaluation, *, model_name: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """One cases.jsonl line."""
    r = ev.result
    return {
        "case_id": r.case_id, "method": ev.method, "model": model_name, "hparams": _jsonable(hparams),
        "seconds": round(ev.seconds, 3), "score": r.score, "fluency": r.fluency, "consistency": r.consistency,
        "post": {name: metric_to_dict(getattr(r, name)) for name in METRICS},
        "pre": {name: metric_to_dict(getattr(ev.before, name)) for name in METRICS},
        "flipped": ev.flipped(),
        "relation_tokens": [None if t is None else {"text": t.text, "token_id": t.token_id, "prob": t.prob}
                            for t in ev.before.tokens],
        "generations": list(ev.generations),
    }


def case_from_dict(data: Mapping[str, Any], stage: str = "post") -> CaseResult:
    """The CaseResult of a cases.jsonl line (``stage="pre"``: the unedited model's metrics)."""
    metrics = {name: metric_from_dict(name, data[stage][name]) for name in METRICS}
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


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _key(case_id: Any, method: str) -> tuple[str, str]:
    return json.dumps(case_id), method


# ----------------------------------------------------------------------------- summary
def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def summarize_lines(lines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One method's summary.json entry from its cases.jsonl lines."""
    post = summarize([case_from_dict(line) for line in lines])
    pre = summarize([case_from_dict(line, "pre") for line in lines])
    out: dict[str, Any] = {"n": post.n_cases}
    out.update({name: _percent(getattr(post.rates, name)) for name in METRICS})
    out.update(fluency=_percent(post.fluency), consistency=_percent(post.consistency), score=_percent(post.score))
    out.update({f"{name}_magnitude": _percent(getattr(post.magnitudes, name)) for name in METRICS})
    out["pre"] = {name: _percent(getattr(pre.rates, name)) for name in METRICS}
    out["seconds_per_edit"] = round(statistics.median(l["seconds"] for l in lines), 3) if lines else None
    if lines:
        out.update(model=lines[0]["model"], hparams=lines[0]["hparams"])
    return out


# ---------------------------------------------------------------------------------- run
def resolve_hparams(methods: Iterable[str], model, model_name: str | None,
                    given: Mapping[str, Hparams] | None = None) -> dict[str, Hparams]:
    """Each method's hyperparameters: ``given`` where present, else its preset for the model."""
    adapter = as_adapter(model)
    given = given or {}
    return {method: preset_or_given(method, given.get(method), model_name, adapter.n_layers) for method in methods}


def _check_resume(done: Mapping[tuple[str, str], Mapping[str, Any]], settings: Mapping[str, Mapping[str, Any]],
                  path: Path) -> None:
    """Refuse to mix: a method's finished lines must share this run's model, hparams and generation."""
    for (case_id, method), line in done.items():
        wanted = settings.get(method)
        if wanted is None:
            continue
        differ = [k for k, v in wanted.items() if line.get(k) != v]
        if differ:
            raise ValueError(f"{path} holds case {case_id} of {method!r} run with other {', '.join(differ)} "
                             f"({', '.join(f'{k}={line.get(k)!r}' for k in differ)}); use another output folder")


def _drop_partial_line(path: Path, lines: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite cases.jsonl without a truncated last line, so appending continues cleanly."""
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")


def _check_records(records: Sequence[Record]) -> None:
    seen: set[str] = set()
    for record in records:
        key = json.dumps(record.case_id)
        if key in seen:
            raise ValueError(f"case_id {record.case_id!r} appears twice; cases.jsonl needs unique case ids")
        seen.add(key)


def run_eval(model, records: Sequence[Record], methods: Sequence[str], out_dir: str | Path, *,
             hparams: Mapping[str, Hparams] | None = None, model_name: str | None = None,
             stop_words: frozenset[str] = m.FALLBACK_STOP_WORDS, generation_tokens: int = GENERATION_TOKENS,
             top_k: int = GENERATION_TOP_K, seed: int = 0, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Evaluate every method on every record; returns (and writes) the summary.

    Args:
        model: a TransformerLens model (or ModelAdapter); its weights are the same afterwards.
        records: the cases (unique case ids).
        methods: editor names; an unknown one raises ValueError before anything runs.
        out_dir: where cases.jsonl (appended, resumable) and summary.json go.
        hparams: per-method hyperparameters; a method not in it uses its preset for ``model_name``.
        model_name: recorded in each line and used for presets; default the model's cfg name.
        stop_words, generation_tokens, top_k, seed: see analyses.evaluate.evaluate_case.
        progress: show a tqdm bar over records.
    """
    for method in methods:
        get_editor(method)
    name = model_name or as_adapter(model).name
    chosen = resolve_hparams(methods, model, name, hparams)
    _check_records(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CASES_FILE
    lines = read_cases(path)
    _drop_partial_line(path, lines)
    done = {_key(line["case_id"], line["method"]): line for line in lines}
    generation = {"tokens": generation_tokens, "top_k": top_k, "seed": seed}
    settings = {mt: {"model": name, "hparams": _jsonable(chosen[mt].to_dict()), "generation": generation}
                for mt in methods}
    _check_resume(done, settings, path)
    options = dict(stop_words=stop_words, generation_tokens=generation_tokens, top_k=top_k, seed=seed)
    with open(path, "a", encoding="utf-8") as sink:
        for record in tqdm(records, desc="eval", unit="case", disable=not progress):
            pending = [mt for mt in methods if _key(record.case_id, mt) not in done]
            before = measure(model, record, stop_words=stop_words) if pending else None
            for method in pending:
                ev = evaluate_case(model, record, method, chosen[method], before=before, **options)
                line = {**case_to_dict(ev, model_name=name, hparams=chosen[method].to_dict()),
                        "generation": generation}
                sink.write(json.dumps(line, ensure_ascii=False) + "\n")
                sink.flush()
                done[_key(record.case_id, method)] = line
    summary = {mt: summarize_lines([done[_key(r.case_id, mt)] for r in records]) for mt in methods}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from toplens import as_adapter
from toplens.core.hparams import Hparams
from toplens.editors import get_editor
from toplens.editors.presets import preset_or_given

from toplens.analyses.evaluation import metrics as m
from toplens.analyses.evaluation.cases import (CASES_FILE, MethodSummary, case_from_dict, case_to_dict, jsonable,
                                               read_cases, summarize_lines)
from toplens.analyses.evaluation.evaluate import GENERATION_TOKENS, GENERATION_TOP_K, evaluate_case, measure
from toplens.analyses.evaluation.records import Record
from toplens.analyses.evaluation.results import CaseResult

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class EvalResult:
    """What :func:`run_eval` wrote into ``out_dir``.

    Attributes:
        summaries: per method, the means over the run's records (summary.json's entries).
        cases: per method, each record's post-edit metrics, in the order of the records.
        out_dir: the folder holding cases.jsonl and summary.json.
    """

    summaries: Mapping[str, MethodSummary]
    cases: Mapping[str, tuple[CaseResult, ...]]
    out_dir: Path

    def to_json(self) -> dict[str, dict[str, Any]]:
        """The content of summary.json: per method, the rates in percent, magnitudes, pre-edit rates."""
        return {method: summary.to_json() for method, summary in self.summaries.items()}


def _key(case_id: Any, method: str) -> tuple[str, str]:
    return json.dumps(case_id), method


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
             top_k: int = GENERATION_TOP_K, seed: int = 0, progress: bool = True) -> EvalResult:
    """Evaluate every method on every record; writes cases.jsonl and summary.json, returns both.

    Args:
        model: a TransformerLens model (or ModelAdapter); its weights are the same afterwards.
        records: the cases (unique case ids).
        methods: editor names; an unknown one raises ValueError before anything runs.
        out_dir: where cases.jsonl (appended, resumable) and summary.json go.
        hparams: per-method hyperparameters; a method not in it uses its preset for ``model_name``.
        model_name: recorded in each line and used for presets; default the model's cfg name.
        stop_words, generation_tokens, top_k, seed: see analyses.evaluation.evaluate.evaluate_case.
        progress: show a tqdm bar over records.
    """
    for method in methods:
        get_editor(method)
    adapter = as_adapter(model)
    name = model_name or adapter.name
    given = hparams or {}
    chosen = {mt: preset_or_given(mt, given.get(mt), name, adapter.n_layers) for mt in methods}
    _check_records(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CASES_FILE
    lines = read_cases(path)
    _drop_partial_line(path, lines)
    done = {_key(line["case_id"], line["method"]): line for line in lines}
    generation = {"tokens": generation_tokens, "top_k": top_k, "seed": seed}
    settings = {mt: {"model": name, "hparams": jsonable(chosen[mt].to_dict()), "generation": generation}
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
    result = _result(out, records, methods, done)
    (out / SUMMARY_FILE).write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return result


def _result(out: Path, records: Sequence[Record], methods: Sequence[str],
            done: Mapping[tuple[str, str], Mapping[str, Any]]) -> EvalResult:
    """Each method's summary and cases over ``records``, from their cases.jsonl lines."""
    lines = {mt: [done[_key(r.case_id, mt)] for r in records] for mt in methods}
    return EvalResult({mt: summarize_lines(lines[mt]) for mt in methods},
                      {mt: tuple(case_from_dict(line) for line in lines[mt]) for mt in methods}, out)

"""Evaluate methods over many records: ``cases.jsonl`` and ``summary.json`` in an output folder.

``cases.jsonl`` gets one JSON line per (case, method), appended as each finishes, with the model
name, the hyperparameters, a fingerprint of the record's content, the per-prompt outcomes before
and after the edit and the generations. A rerun into the same folder skips the (case_id, method)
pairs already there and reuses their lines, so an interrupted run resumes; it refuses lines of
another model, other hparams or generation settings, or a record whose content has changed.

A record that cannot be evaluated (a subject that merges with the next token, a prompt longer
than the model's context) is reported with its case id and index, written to ``skipped.jsonl``
with the reason, and the run goes on; ``strict=True`` stops instead. ``summary.json`` holds, per
method, the means over the evaluated records in percent (Fluency and Consistency ×100, as the
papers print them) and the skipped records.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm.auto import tqdm

from toplens import as_adapter
from toplens.core.cache import write_atomic
from toplens.core.hparams import Hparams
from toplens.core.precision import resolve_precision
from toplens.editors import get_editor
from toplens.editors.presets import preset_or_given

from toplens.analyses.evaluation import metrics as m
from toplens.analyses.evaluation.cases import (CASES_FILE, MethodSummary, case_from_dict, jsonable,
                                               read_cases, summarize_lines)
from toplens.analyses.evaluation.case_lines import (RECORD_ERRORS, SkippedCase, chunk_lines,  # noqa: F401 (re-exported)
                                                    record_lines)
from toplens.analyses.evaluation.evaluate import GENERATION_TOKENS, GENERATION_TOP_K, generation_settings
from toplens.analyses.evaluation.records import Record
from toplens.analyses.evaluation.results import CaseResult

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
SKIPPED_FILE = "skipped.jsonl"
def record_digest(record: Record) -> str:
    """A fingerprint of a record's content (its request and every prompt list)."""
    return hashlib.sha256(json.dumps(jsonable(record.to_dict()), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EvalResult:
    """What :func:`run_eval` wrote into ``out_dir``.

    Attributes:
        summaries: per method, the means over the run's records (summary.json's entries).
        cases: per method, each evaluated record's post-edit metrics, in the order of the records.
        out_dir: the folder holding cases.jsonl, skipped.jsonl and summary.json.
        skipped: the records that could not be evaluated, with the reasons.
    """

    summaries: Mapping[str, MethodSummary]
    cases: Mapping[str, tuple[CaseResult, ...]]
    out_dir: Path
    skipped: tuple[SkippedCase, ...] = ()

    def to_json(self) -> dict[str, dict[str, Any]]:
        """The content of summary.json: per method, the rates in percent, magnitudes, pre-edit
        rates, and the records skipped (``"skipped"``, a list of case id, index and reason)."""
        return {method: {**summary.to_json(), "skipped": [s.to_json() for s in self.skipped if s.method == method]}
                for method, summary in self.summaries.items()}


def _key(case_id: Any, method: str) -> tuple[str, str]:
    return json.dumps(case_id), method


def _field_defaults(hparams: Hparams) -> dict[str, Any]:
    """The defaults of ``hparams``' class, as JSON: a line written before a field existed holds it at its default."""
    return jsonable({f.name: f.default if f.default is not MISSING else f.default_factory()
                     for f in fields(hparams) if f.default is not MISSING or f.default_factory is not MISSING})


def _as_written(line: Mapping[str, Any], defaults: Mapping[str, Mapping[str, Any]], method: str) -> dict:
    """``line``'s settings, its hparams completed with the fields added since (at their defaults)."""
    stored = dict(line)
    if isinstance(stored.get("hparams"), dict):
        stored["hparams"] = {**defaults.get(method, {}), **stored["hparams"]}
    return stored


def _check_resume(done: Mapping[tuple[str, str], Mapping[str, Any]], settings: Mapping[str, Mapping[str, Any]],
                  digests: Mapping[str, str], path: Path, defaults: Mapping[str, Mapping[str, Any]],
                  precisions: Mapping[str, str]) -> None:
    """Refuse to mix: a method's finished lines must share this run's model, hparams, generation
    and the precision "auto" resolved to, and each must be of the same record content as this
    run's record of its case id."""
    for (case_id, method), written in done.items():
        line = _as_written(written, defaults, method)
        wanted = settings.get(method)
        if wanted is None:
            continue
        if case_id in digests and line.get("record") != digests[case_id]:
            raise ValueError(f"{path} holds case {case_id} of {method!r} evaluated on other record content "
                             f"(fingerprint {line.get('record')!r}, this data's is {digests[case_id]!r}); "
                             "use another output folder")
        differ = [k for k, v in wanted.items() if line.get(k) != v]
        if differ:
            raise ValueError(f"{path} holds case {case_id} of {method!r} run with other {', '.join(differ)} "
                             f"({', '.join(f'{k}={line.get(k)!r}' for k in differ)}); use another output folder")
        ran = (line.get("as_run") or {}).get("precision")
        if ran is not None and ran != precisions[method]:
            raise ValueError(f"{path} holds case {case_id} of {method!r} run in precision {ran!r} (precision='auto' "
                             f"on another device); here it runs in {precisions[method]!r}; use another output folder")


def _drop_partial_line(path: Path, lines: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite cases.jsonl without a truncated last line, so appending continues cleanly."""
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


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
             top_k: int = GENERATION_TOP_K, seed: int = 0, progress: bool = True, strict: bool = False,
             batch_size: int = 1) -> EvalResult:
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
        strict: stop at the first record that cannot be evaluated, instead of skipping it.
        batch_size: records measured together, each under its own edit as per-row hooks
            (:mod:`toplens.analyses.evaluation.batched`); 1 measures one record at a time.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    for method in methods:
        get_editor(method)
    adapter = as_adapter(model)
    name = model_name or adapter.name
    given = hparams or {}
    chosen = {mt: preset_or_given(mt, given.get(mt), name, adapter.n_layers) for mt in methods}
    for mt in methods:  # errors of the settings, not of a record: they stop the run before it starts
        adapter.require_mlp()
        for layer in chosen[mt].edit_layers:
            adapter.check_layer(layer, f"{type(chosen[mt]).__name__}.{chosen[mt].layers_field}")
    _check_records(records)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generation = generation_settings(generation_tokens, top_k, seed)
    settings = {mt: {"model": name, "hparams": jsonable(chosen[mt].to_dict()), "generation": generation}
                for mt in methods}
    digests = {json.dumps(r.case_id): record_digest(r) for r in records}
    defaults = {mt: _field_defaults(chosen[mt]) for mt in methods}
    precisions = {mt: resolve_precision(adapter, chosen[mt].precision) for mt in methods}
    done = _resumed(out / CASES_FILE, settings, digests, defaults, precisions)
    skipped = _resumed_skips(out / SKIPPED_FILE, settings, digests, strict, defaults)
    options = dict(stop_words=stop_words, generation_tokens=generation_tokens, top_k=top_k, seed=seed)
    with open(out / CASES_FILE, "a", encoding="utf-8") as sink, \
            open(out / SKIPPED_FILE, "a", encoding="utf-8") as skips:
        bar = tqdm(total=len(records), desc="eval", unit="case", disable=not progress)
        for first in range(0, len(records), batch_size):
            chunk = [(i, records[i], [mt for mt in methods if _key(records[i].case_id, mt) not in done
                                      and _key(records[i].case_id, mt) not in skipped])
                     for i in range(first, min(first + batch_size, len(records)))]
            lines = (chunk_lines(model, chunk, chosen, name, options, strict) if batch_size > 1 else
                     ((record, mt, line) for index, record, pending in chunk
                      for mt, line in record_lines(model, record, index, pending, chosen, name, options, strict)))
            for record, method, line in lines:
                line = {**settings[method], **line, "record": digests[json.dumps(record.case_id)]}
                is_skip = "reason" in line
                _append(skips if is_skip else sink, line)
                (skipped if is_skip else done)[_key(record.case_id, method)] = line
            bar.update(len(chunk))
        bar.close()
    result = _result(out, records, methods, done, skipped)
    summary = json.dumps(result.to_json(), indent=2) + "\n"
    write_atomic(out / SUMMARY_FILE, lambda tmp: Path(tmp).write_text(summary, encoding="utf-8"))
    return result


def _append(sink, line: Mapping[str, Any]) -> None:
    sink.write(json.dumps(line, ensure_ascii=False) + "\n")
    sink.flush()


def _resumed(path: Path, settings: Mapping[str, Mapping[str, Any]], digests: Mapping[str, str],
             defaults: Mapping[str, Mapping[str, Any]], precisions: Mapping[str, str]) -> dict:
    """The finished (case_id, method) lines of ``path``, checked against this run's settings."""
    lines = read_cases(path)
    _drop_partial_line(path, lines)
    done = {_key(line["case_id"], line["method"]): line for line in lines}
    _check_resume(done, settings, digests, path, defaults, precisions)
    current = _completed(path, lines, settings, defaults)
    return {_key(line["case_id"], line["method"]): line for line in current}


def _completed(path: Path, lines: list[dict[str, Any]], settings: Mapping[str, Mapping[str, Any]],
               defaults: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``lines`` with the Hparams fields added since they were written, at their defaults; the
    file is written again with them when any was missing, so the folder agrees with itself."""
    current = [_as_written(line, defaults, line["method"]) if line["method"] in settings else line for line in lines]
    if current != lines:
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in current)
        write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return current


def _resumed_skips(path: Path, settings: Mapping[str, Mapping[str, Any]], digests: Mapping[str, str],
                   strict: bool, defaults: Mapping[str, Mapping[str, Any]]) -> dict:
    """The records skipped before whose content is unchanged (a changed record is tried again);
    ``strict`` refuses any such record of this run, as it would have refused it then."""
    lines = read_cases(path)
    _drop_partial_line(path, lines)
    lines = _completed(path, lines, settings, defaults)
    same = [line for line in lines if digests.get(json.dumps(line["case_id"])) == line.get("record")]
    skipped = {_key(line["case_id"], line["method"]): line for line in same
               if line["method"] in settings and all(line.get(k) == v for k, v in settings[line["method"]].items())}
    if strict and skipped:
        line = next(iter(skipped.values()))
        raise ValueError(f"case {line['case_id']!r} was skipped by an earlier run into {path.parent}: "
                         f"{line['reason']}")
    return skipped


def _result(out: Path, records: Sequence[Record], methods: Sequence[str],
            done: Mapping[tuple[str, str], Mapping[str, Any]],
            skipped: Mapping[tuple[str, str], Mapping[str, Any]]) -> EvalResult:
    """Each method's summary and cases over the evaluated ``records``, and the skipped ones."""
    lines = {mt: [done[_key(r.case_id, mt)] for r in records if _key(r.case_id, mt) in done] for mt in methods}
    skips = tuple(SkippedCase(line["case_id"], index, mt, line["reason"])
                  for index, r in enumerate(records) for mt in methods if (line := skipped.get(_key(r.case_id, mt))))
    return EvalResult({mt: summarize_lines(lines[mt]) for mt in methods},
                      {mt: tuple(case_from_dict(line) for line in lines[mt]) for mt in methods}, out, skips)

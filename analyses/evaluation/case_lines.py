"""The cases.jsonl lines of the evaluation runner: one record, or a batch of records measured
together, under each method; a record one method cannot take becomes a skipped line."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from toplens import RequestError
from toplens.core.hparams import Hparams

from toplens.analyses.evaluation.batched import evaluate_cases, measure_many
from toplens.analyses.evaluation.cases import case_to_dict
from toplens.analyses.evaluation.evaluate import evaluate_case, measure
from toplens.analyses.evaluation.records import DatasetError, Record

logger = logging.getLogger(__name__)

#: errors that belong to one record (a request the model cannot take: a subject whose tokens merge
#: with their neighbours, a prompt longer than the context); any other error stops the run
RECORD_ERRORS = (RequestError, DatasetError)


@dataclass(frozen=True)
class SkippedCase:
    """A record that could not be evaluated with a method: its case id, index and the reason."""

    case_id: Any
    index: int
    method: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "index": self.index, "method": self.method, "reason": self.reason}


def record_lines(model, record: Record, index: int, methods: Sequence[str], chosen: Mapping[str, Hparams],
                 name: str, options: Mapping[str, Any], strict: bool):
    """Yield (method, cases.jsonl line) for each method, or (method, skipped line) for a method
    whose edit or measurement refused the record (``strict``: raise, naming the case)."""
    try:
        before = measure(model, record, stop_words=options["stop_words"]) if methods else None
    except RECORD_ERRORS as err:
        yield from ((mt, skip_line(record, index, mt, err, strict)) for mt in methods)
        return
    for method in methods:
        try:
            ev = evaluate_case(model, record, method, chosen[method], before=before, **options)
        except RECORD_ERRORS as err:
            yield method, skip_line(record, index, method, err, strict)
            continue
        yield method, case_to_dict(ev, model_name=name, hparams=chosen[method].to_dict())


def chunk_lines(model, chunk, chosen: Mapping[str, Hparams], name: str, options: Mapping[str, Any], strict: bool):
    """Yield (record, method, line) for the (index, record, pending methods) of ``chunk``, measured
    together; a chunk whose records cannot all be measured before the edit goes one at a time."""
    todo = [(i, r, p) for i, r, p in chunk if p]
    try:
        befores = measure_many(model, [r for _, r, _ in todo], stop_words=options["stop_words"]) if todo else []
    except RECORD_ERRORS:
        yield from ((r, mt, line) for i, r, p in todo for mt, line in
                    record_lines(model, r, i, p, chosen, name, options, strict))
        return
    for method in dict.fromkeys(mt for _, _, p in todo for mt in p):
        rows = [k for k, (_, _, p) in enumerate(todo) if method in p]
        evs = evaluate_cases(model, [todo[k][1] for k in rows], method, chosen[method], [befores[k] for k in rows],
                             **options)
        for k, ev in zip(rows, evs, strict=True):
            index, record, _ = todo[k]
            yield record, method, (skip_line(record, index, method, ev, strict) if isinstance(ev, Exception) else
                                   case_to_dict(ev, model_name=name, hparams=chosen[method].to_dict()))


def skip_line(record: Record, index: int, method: str, err: Exception, strict: bool) -> dict[str, Any]:
    """The skipped.jsonl line of ``record`` for ``method`` (``strict``: raise instead, naming the case)."""
    where = f"case {record.case_id!r} (record {index})"
    if strict:
        raise ValueError(f"{where}: {err}") from err
    logger.warning("skipping %s for %s: %s", where, method, err)
    return SkippedCase(record.case_id, index, method, str(err)).to_json()

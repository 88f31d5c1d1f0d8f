"""The measurement of many records in one pass, each under its own edit.

:func:`measure_many` gives, for every record, the :class:`~toplens.analyses.evaluation.evaluate.Measurement`
that :func:`~toplens.analyses.evaluation.evaluate.measure` gives on the model with that record's edit
folded in alone. The prompts of all records run together: one teacher-forced forward for every
(prompt, target) pair and one next-token forward, with the edits applied per row as hooks
(:func:`toplens.core.row_edits.per_row_edits`), so the weights never change. Only the float order
differs from measuring one record at a time.
"""

from __future__ import annotations

import time
from typing import Sequence

from toplens import as_adapter
from toplens.core.edits import WeightEdit
from toplens.core.requests import RequestError
from toplens.core.row_edits import per_row_edits
from toplens.core.scoring import target_logprobs

from toplens.analyses.evaluation import metrics as m
from toplens.analyses.evaluation.evaluate import (GENERATION_TOKENS, GENERATION_TOP_K, CaseEvaluation, ContentToken,
                                                  Measurement, case_evaluation, check_record_fits, generate,
                                                  measure_inputs, measurement_from, next_token_logprobs)
from toplens.analyses.evaluation.records import DatasetError, Record
from toplens.editors import get_editor


def measure_many(model, records: Sequence[Record], edits: Sequence[WeightEdit] | None = None,
                 tokens: Sequence[Sequence[ContentToken | None] | None] | None = None,
                 stop_words: frozenset[str] = m.FALLBACK_STOP_WORDS) -> list[Measurement]:
    """``measure`` of each record on the model with ``edits[i]`` folded in alone (no edit when
    ``edits`` is None), in two batched forwards over every record's prompts. ``tokens[i]`` are
    record i's pre-edit relation-specific tokens (None: taken from the model now, as ``measure``)."""
    if not records:
        return []
    edits = list(edits) if edits is not None else None
    tokens = list(tokens) if tokens is not None else [None] * len(records)
    if (edits is not None and len(edits) != len(records)) or len(tokens) != len(records):
        raise ValueError(f"edits and tokens need one entry per record ({len(records)}); got "
                         f"{None if edits is None else len(edits)} edits and {len(tokens)} token lists")
    for record in records:
        check_record_fits(model, record)
    inputs = [measure_inputs(record) for record in records]
    pairs = [(i, pair) for i, (groups, _) in enumerate(inputs) for group in groups.values() for pair in group]
    prompts = [(i, p) for i, (_, nexts) in enumerate(inputs) for p in nexts]
    flat = _under(model, edits, [i for i, _ in pairs],
                  lambda: target_logprobs(model, [p for _, (p, _) in pairs], [t for _, (_, t) in pairs]) if pairs else [])
    nexts = _under(model, edits, [i for i, _ in prompts], lambda: next_token_logprobs(model, [p for _, p in prompts]))
    out, at, row = [], 0, 0
    for (groups, next_prompts), record, given in zip(inputs, records, tokens, strict=True):
        lp = {}
        for name, group in groups.items():
            lp[name], at = flat[at:at + len(group)], at + len(group)
        next_lp, row = nexts[row:row + len(next_prompts)], row + len(next_prompts)
        out.append(measurement_from(model, record, lp, next_lp, given, stop_words))
    return out


def _under(model, edits: Sequence[WeightEdit] | None, row_edit: list[int], run):
    """``run()`` with ``edits[row_edit[b]]`` applied to row b of its one forward (no hooks without edits)."""
    if edits is None or not row_edit:
        return run()
    with as_adapter(model).hooks(per_row_edits(model, edits, row_edit)):
        return run()


def evaluate_cases(model, records: Sequence[Record], method: str, hparams, befores: Sequence[Measurement], *,
                   generation_tokens: int = GENERATION_TOKENS, top_k: int = GENERATION_TOP_K, seed: int = 0,
                   stop_words: frozenset[str] = m.FALLBACK_STOP_WORDS) -> list[CaseEvaluation | Exception]:
    """:func:`~toplens.analyses.evaluation.evaluate.evaluate_case` of each record, the edits
    computed one at a time on the unedited model, measured together (:func:`measure_many`) and
    sampled together, each record's prompts under its own edit as per-row hooks; the generations
    are the texts ``evaluate_case`` samples, up to float order. A record whose edit is refused
    (RequestError, DatasetError) gets that error in its place. The model ends with its original weights."""
    editor = get_editor(method)
    asked = editor.hparams_type() if hparams is None else hparams
    out: list[CaseEvaluation | Exception | None] = [None] * len(records)
    made = []
    for i, record in enumerate(records):
        try:
            check_record_fits(model, record, generation_tokens)
            start = time.perf_counter()
            made.append((i, editor.compute(model, record.request, hparams), time.perf_counter() - start))
        except (RequestError, DatasetError) as err:
            out[i] = err
    afters = measure_many(model, [records[i] for i, _, _ in made], [e for _, e, _ in made],
                          [befores[i].tokens for i, _, _ in made], stop_words)
    prompts = [(k, p) for k, (i, _, _) in enumerate(made) for p in records[i].generation_prompts]
    texts = generate(model, [p for _, p in prompts], n_tokens=generation_tokens, top_k=top_k, seed=seed,
                     edits=[e for _, e, _ in made], prompt_edit=[k for k, _ in prompts])
    at = 0
    for (i, edit, seconds), after in zip(made, afters, strict=True):
        n = len(records[i].generation_prompts) if generation_tokens > 0 else 0
        out[i] = case_evaluation(records[i], method, asked, edit, befores[i], after, texts[at:at + n], seconds)
        at += n
    return out

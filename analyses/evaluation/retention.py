"""Retention in a sequential run: held-out facts the unedited model knows (its top next token is
the true object's first token), and the share of them the model still knows."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from toplens import as_adapter
from toplens.core.positions import target_ids

from toplens.analyses.evaluation.evaluate import next_token_logprobs
from toplens.analyses.evaluation.records import Record

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOut:
    """What the unedited model knows outside the edited records: (prompt, true object's first
    token id) pairs it completes correctly, and the prompts Fluency is generated from."""

    facts: tuple[tuple[str, int], ...]
    generation_prompts: tuple[str, ...]


def known_held_out(model, held_out: Sequence[Record], edited: Sequence[Record], n_facts: int = 100,
                   n_prompts: int = 10) -> HeldOut:
    """The first ``n_facts`` held-out records (subjects no edit touches) whose rewrite prompt the
    unedited model completes with the true object's first token, and ``n_prompts`` of their
    generation prompts."""
    adapter = as_adapter(model)
    touched = {r.request.subject for r in edited}
    pool = [r for r in held_out if r.request.target_true and r.request.subject not in touched]
    facts: list[tuple[str, int]] = []
    for start in range(0, len(pool), 32):
        chunk = pool[start:start + 32]
        top = next_token_logprobs(adapter, [r.request.text for r in chunk]).argmax(-1).tolist()
        for record, token in zip(chunk, top, strict=True):
            if token == target_ids(adapter, record.request.text, record.request.target_true, field="target_true")[0]:
                facts.append((record.request.text, token))
        if len(facts) >= n_facts:
            break
    if len(facts) < n_facts:
        logger.warning("retention: the unedited model knows only %d of %d held-out facts (%d asked for)",
                       len(facts), len(pool), n_facts)
    prompts = [p for r in pool for p in r.generation_prompts[:1]][:n_prompts]
    return HeldOut(tuple(facts[:n_facts]), tuple(prompts))


def retention(model, facts: Sequence[tuple[str, int]]) -> float | None:
    """Percent of ``facts`` whose true first token is still the model's top next token (None without facts)."""
    if not facts:
        return None
    kept = 0
    for start in range(0, len(facts), 32):
        chunk = facts[start:start + 32]
        top = next_token_logprobs(model, [p for p, _ in chunk]).argmax(-1).tolist()
        kept += sum(t == want for t, (_, want) in zip(top, chunk, strict=True))
    return 100.0 * kept / len(facts)

"""The settings of a sequential run checked before any work: the held-out pool that retention and
Fluency need, the null-space projection's K₀ corpus (given texts or a sampled size), and what
run.json records of the generations."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterable, Sequence

from toplens.core.covariance import SampledCorpus, corpus_fingerprint
from toplens.core.hparams import Hparams
from toplens.core.nullspace import SequentialProjection

from toplens.analyses.evaluation.evaluate import GENERATION_SAMPLER
from toplens.analyses.evaluation.records import Record


def generation_entry(tokens: int, top_k: int, seed: int) -> list[int | str]:
    """run.json's generation entry: [tokens, top_k, seed], and the sampler where there are generations."""
    return [tokens, top_k, seed] + ([GENERATION_SAMPLER] if tokens > 0 else [])


def check_held_out(held_out: Sequence[Record], retention_facts: int, generation_tokens: int) -> None:
    """Refuse a run whose retention or Fluency would have no held-out records to measure."""
    if isinstance(retention_facts, bool) or not isinstance(retention_facts, int) or retention_facts < 0:
        raise ValueError(f"retention_facts must be a non-negative integer; got {retention_facts!r}")
    if not held_out and (retention_facts or generation_tokens):
        raise ValueError(f"held_out: no records, so retention (retention_facts={retention_facts}) and Fluency "
                         f"(generation_tokens={generation_tokens}) have nothing to measure; pass held-out records "
                         "or set both to 0")


def projection_for(hp: Hparams, corpus: Iterable[str] | None,
                   tokens: int | None) -> tuple[SequentialProjection | None, dict[str, Any] | None]:
    """The run's projection (None without ``project="nullspace"``) and the key that names its K₀
    corpus in run.json."""
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise ValueError(f"corpus_tokens must be a positive integer; got {tokens!r}")
    if corpus is not None and tokens is not None:
        raise ValueError("corpus, corpus_tokens: give the texts or the sampled size, not both")
    texts = _texts(corpus)
    if hp.project != "nullspace":
        if texts is not None or tokens is not None:
            raise ValueError(f"corpus, corpus_tokens: only a run with project='nullspace' uses them; "
                             f"got project={hp.project!r}")
        return None, None
    sampled = SampledCorpus(n_texts=-(-tokens // SampledCorpus.n_tokens)) if tokens else SampledCorpus()
    return SequentialProjection(corpus=texts, sampled=sampled), corpus_key(texts, sampled)


def corpus_key(texts: tuple[str, ...] | None, sampled: SampledCorpus = SampledCorpus()) -> dict[str, Any]:
    """What names a K₀ corpus in run.json: the texts' fingerprint, or the sampled corpus' settings
    (a run folder written before the key existed used the default sampled corpus)."""
    return {"texts": corpus_fingerprint(list(texts))} if texts is not None else {"sampled": asdict(sampled)}


def _texts(corpus: Iterable[str] | None) -> tuple[str, ...] | None:
    if corpus is None:
        return None
    if isinstance(corpus, str):
        raise ValueError("corpus must be an iterable of texts, not one string; got a str "
                         f"({corpus[:40]!r}...)")
    texts = tuple(corpus)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(f"corpus must hold only strings; got a {type(bad).__name__}: {bad!r}")
    if not any(t.strip() for t in texts):
        raise ValueError("corpus has no text: key statistics need at least one non-empty string")
    return texts

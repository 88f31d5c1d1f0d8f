"""COUNTERFACT_RS evaluation of an editing method, one record at a time.

For each record: measure the model before the edit (NLLs of o* and o on the rewrite, paraphrase
and neighborhood prompts; the top next token at the rewrite prompt, for Efficacy@1; the top
non-stop-word next token of each relation-specific prompt),
compute the edit with ``get_editor(method).compute`` and fold it in, measure again, generate short
continuations for Fluency (and Consistency where the record has reference texts), and revert in
``finally`` so every record is edited from the original weights. The metrics themselves are the
pure functions of ``toplens.analyses.evaluation.metrics``; this module only feeds them NLLs and texts.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens import apply_edit, as_adapter
from toplens.editors import get_editor
from toplens.model import ModelAdapter
from toplens.model.sampling import prompt_seed, sample_rows
from toplens.core.edits import WeightEdit
from toplens.core.positions import check_fits, target_ids
from toplens.core.row_edits import per_row_edits
from toplens.core.scoring import target_logprobs

from toplens.analyses.evaluation import metrics as m
from toplens.analyses.evaluation.metrics import ContentToken, MetricResult
from toplens.analyses.evaluation.records import Record
from toplens.analyses.evaluation.results import METRICS, CaseResult

logger = logging.getLogger(__name__)

GENERATION_TOKENS = 30  # new tokens per generation prompt (the papers use 100; 0 turns generation off)
GENERATION_TOP_K = 5  # ROME's generate_fast samples from the top 5; 1 is greedy
#: how the generations draw (recorded with a run's settings, so that texts sampled another way never
#: mix in one folder): each prompt from its own stream, :func:`toplens.model.sampling.prompt_seed`
GENERATION_SAMPLER = "per-prompt"


def generation_settings(tokens: int, top_k: int, seed: int) -> dict[str, int | str]:
    """What a run records of its generations: the sampler only where there are any."""
    return {"tokens": tokens, "top_k": top_k, "seed": seed, **({"sampler": GENERATION_SAMPLER} if tokens > 0 else {})}


@dataclass(frozen=True)
class Measurement:
    """The four metrics on a record's prompts at one moment (before or after the edit), the
    relation-specific prompts' pre-edit top tokens that R-Specificity used (None where no content
    word was among the most likely tokens; that prompt is left out), and Efficacy@1."""

    efficacy: MetricResult
    generalization: MetricResult
    s_specificity: MetricResult
    r_specificity: MetricResult
    tokens: tuple[ContentToken | None, ...] = ()
    efficacy_at_1: MetricResult | None = None

    def metrics(self) -> dict[str, MetricResult]:
        return {name: getattr(self, name) for name in METRICS}


@dataclass(frozen=True)
class CaseEvaluation:
    """Everything one (record, method) evaluation produced; ``result`` holds the post-edit metrics."""

    result: CaseResult
    method: str
    before: Measurement
    generations: tuple[str, ...]
    seconds: float
    #: the hyperparameters the edit ran with where they differ from those asked for (precision="auto"
    #: resolved on this device, TOP's rel_feat_layer="auto" settled for this request)
    as_run: Mapping[str, object] = field(default_factory=dict)

    def flipped(self) -> dict[str, list[str]]:
        """Per metric, the prompts whose outcome changed with the edit."""
        out = {}
        for name in METRICS:
            pre, post = getattr(self.before, name).outcomes, getattr(self.result, name).outcomes
            out[name] = [b.prompt for a, b in zip(pre, post, strict=True) if a.success != b.success]
        return out


# ----------------------------------------------------------------------------- scoring
@torch.no_grad()
def next_token_logprobs(model, prompts: Sequence[str]) -> Float[Tensor, "n d_vocab"]:
    """log P(next token | prompt) at the end of each prompt, one batched forward."""
    adapter: ModelAdapter = as_adapter(model)
    seqs = [adapter.tokenize(p) for p in prompts]
    tokens = adapter.to_batch(seqs)
    rows = torch.arange(len(seqs), device=tokens.device)
    cols = torch.tensor([len(s) - 1 for s in seqs], device=tokens.device)
    return adapter.logits_at(tokens, rows, cols).float().log_softmax(-1).cpu()


def grouped_logprobs(model, groups: Mapping[str, Sequence[tuple[str, str]]]) -> dict[str, list[Tensor]]:
    """Per-token log-probs of (prompt, target) pairs in named groups, in one target_logprobs call."""
    pairs = [pair for group in groups.values() for pair in group]
    flat = target_logprobs(model, [p for p, _ in pairs], [t for _, t in pairs]) if pairs else []
    out, start = {}, 0
    for name, group in groups.items():
        out[name] = flat[start:start + len(group)]
        start += len(group)
    return out


def relation_tokens(model, prompts: Sequence[str], log_probs: Tensor,
                    stop_words: frozenset[str]) -> tuple[ContentToken | None, ...]:
    """Each prompt's most likely content-word next token (None, with a warning, if there is none)."""
    adapter = as_adapter(model)
    tokens: list[ContentToken | None] = []
    for prompt, row in zip(prompts, log_probs, strict=True):
        try:
            tokens.append(m.top_non_stop_token(row.exp().numpy(), adapter.decode, stop_words))
        except ValueError:
            logger.warning("no content-word token among the most likely after %r; prompt left out", prompt)
            tokens.append(None)
    return tuple(tokens)


def check_record_fits(model, record: Record, generation_tokens: int = 0) -> None:
    """Refuse a record one of whose prompts, with its longest target (or the generated tokens), is
    longer than the model's context: a PromptTooLongError naming the prompt and the limit."""
    adapter = as_adapter(model)
    req = record.request
    target = max(len(adapter.tokenizer(t, add_special_tokens=False).input_ids)
                 for t in (req.target_new, req.target_true or "", *record.neighborhood_true))
    prompts = [req.text, *record.paraphrase_prompts, *record.neighborhood_prompts, *record.relation_specific_prompts]
    check_fits(adapter, prompts, "a prompt of the record, with its target,", extra=target)
    if generation_tokens > 0:
        check_fits(adapter, record.generation_prompts, f"generation prompt {{}} plus {generation_tokens} new tokens",
                   extra=generation_tokens)


def measure(model, record: Record, tokens: Sequence[ContentToken | None] | None = None,
            stop_words: frozenset[str] = m.FALLBACK_STOP_WORDS) -> Measurement:
    """The four metrics and Efficacy@1 on the model as it is now, from one batched target_logprobs
    call and one batched next-token call (the rewrite prompt and the relation-specific prompts).

    ``tokens`` are the relation-specific prompts' pre-edit top tokens (``before.tokens``); None,
    before the edit, takes them from the model now, skipping ``stop_words``.
    """
    check_record_fits(model, record)
    groups, next_prompts = measure_inputs(record)
    lp = grouped_logprobs(model, groups)
    return measurement_from(model, record, lp, next_token_logprobs(model, next_prompts), tokens, stop_words)


def measure_inputs(record: Record) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """What :func:`measure` runs: the named groups of (prompt, target) pairs it scores, and the
    prompts whose next-token distribution it reads (the rewrite prompt, then the relation-specific ones)."""
    req = record.request
    own = [req.text, *record.paraphrase_prompts]
    neighbors = [(p, t) for p, t in zip(record.neighborhood_prompts, record.neighborhood_true) if t.strip()]
    rs_prompts = list(record.relation_specific_prompts)
    groups = {
        "new": [(p, req.target_new) for p in own],
        "true": [(p, req.target_true) for p in own] if req.target_true else [],
        "neighbor_new": [(p, req.target_new) for p, _ in neighbors],
        "neighbor_true": neighbors,
        "rs_new": [(p, req.target_new) for p in rs_prompts],
    }
    return groups, [req.text, *rs_prompts]


def measurement_from(model, record: Record, lp: Mapping[str, list[Tensor]], next_lp: Tensor,
                     tokens: Sequence[ContentToken | None] | None, stop_words: frozenset[str]) -> Measurement:
    """The Measurement from the log-probs of :func:`measure_inputs`' pairs (``lp``, by group) and
    next-token prompts (``next_lp``)."""
    rs_prompts = list(record.relation_specific_prompts)
    if tokens is None:
        tokens = relation_tokens(model, rs_prompts, next_lp[1:], stop_words)
    rs = _r_specificity(rs_prompts, tuple(tokens), next_lp[1:], lp["rs_new"], record.request.target_new)
    return Measurement(*_target_metrics(record, lp), rs, tuple(tokens),
                       efficacy_at_1=_efficacy_at_1(model, record, next_lp[0]))


def _efficacy_at_1(model, record: Record, log_probs: Float[Tensor, " d_vocab"]) -> MetricResult:
    """Efficacy@1 from the rewrite prompt's next-token log-probs: is o*'s first token the top one?"""
    adapter = as_adapter(model)
    req = record.request
    first = target_ids(adapter, req.text, req.target_new, field="target_new")[0]
    return m.efficacy_at_1(req.text, log_probs.numpy(), first, decode=adapter.decode)


def _target_metrics(record: Record, lp: Mapping[str, list[Tensor]]) -> list[MetricResult]:
    """Efficacy, Generalization (empty without target_true) and S-Specificity from log-probs."""
    req = record.request
    nll, nll_true = ([m.mean_token_nll(x.tolist()) for x in lp[k]] for k in ("new", "true"))
    labels = dict(new=req.target_new, true=req.target_true or "")
    neighbors = [(p, t) for p, t in zip(record.neighborhood_prompts, record.neighborhood_true) if t.strip()]
    return [
        m.efficacy(req.text, nll[0], nll_true[0], **labels) if nll_true else MetricResult("efficacy", ()),
        m.generalization(record.paraphrase_prompts, nll[1:], nll_true[1:], **labels) if nll_true
        else MetricResult("generalization", ()),
        m.s_specificity([p for p, _ in neighbors], [m.mean_token_nll(x.tolist()) for x in lp["neighbor_new"]],
                        [m.mean_token_nll(x.tolist()) for x in lp["neighbor_true"]], new=req.target_new,
                        true=[t for _, t in neighbors]),
    ]


def _r_specificity(prompts: Sequence[str], tokens: Sequence[ContentToken | None], next_lp: Tensor,
                   new_lp: Sequence[Tensor], new: str) -> MetricResult:
    """Each pre-edit top token's NLL now against o*'s (the max over o*'s tokens)."""
    kept = [i for i, t in enumerate(tokens) if t is not None]
    return m.r_specificity([prompts[i] for i in kept], [tokens[i].text for i in kept],  # type: ignore[union-attr]
                           [-float(next_lp[i, tokens[i].token_id]) for i in kept],  # type: ignore[union-attr]
                           [m.max_token_nll(new_lp[i].tolist()) for i in kept], new=new)


# -------------------------------------------------------------------------- generation
def generate(model, prompts: Sequence[str], *, n_tokens: int = GENERATION_TOKENS,
             top_k: int = GENERATION_TOP_K, seed: int = 0, edits: Sequence[WeightEdit] | None = None,
             prompt_edit: Sequence[int] | None = None) -> tuple[str, ...]:
    """Seeded top-k continuations (prompt included, as ROME scores them). Each prompt draws from
    its own stream (:func:`toplens.model.sampling.prompt_seed`), so its text never depends on the
    other prompts; prompts of equal token length run together. With ``edits``, prompt i runs under
    ``edits[prompt_edit[i]]`` alone, applied per row as hooks. ``top_k=1`` is greedy;
    ``n_tokens=0`` generates nothing."""
    if n_tokens <= 0 or not prompts:
        return ()
    adapter = as_adapter(model)
    seqs = [adapter.tokenize(p) for p in prompts]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, seq in enumerate(seqs):
        by_length[len(seq)].append(i)
    texts: list[str] = [""] * len(seqs)
    for _, indices in sorted(by_length.items()):
        hooks = per_row_edits(adapter, edits, [prompt_edit[i] for i in indices]) if edits else []
        with adapter.hooks(hooks):
            rows = sample_rows(adapter, [seqs[i] for i in indices], n_tokens, top_k,
                               [prompt_seed(seed, prompts[i]) for i in indices])
        for i, row in zip(indices, rows, strict=True):
            texts[i] = adapter.tokenizer.decode(row, skip_special_tokens=True)
    return tuple(texts)


# -------------------------------------------------------------------------- one record
def evaluate_case(model, record: Record, method: str, hparams, *,
                  stop_words: frozenset[str] = m.FALLBACK_STOP_WORDS, before: Measurement | None = None,
                  generation_tokens: int = GENERATION_TOKENS, top_k: int = GENERATION_TOP_K,
                  seed: int = 0) -> CaseEvaluation:
    """Edit the model for ``record`` with ``method``, measure, and revert (always).

    Args:
        model: a TransformerLens model (or ModelAdapter); left with its original weights.
        record: the case.
        method: an editor name known to ``toplens.editors.get_editor``.
        hparams: that editor's hyperparameters.
        stop_words: skipped when picking the relation-specific prompts' top tokens.
        before: the record measured before any edit (``measure(model, record)``), to share it
            between methods; measured here when None.
        generation_tokens, top_k, seed: the Fluency/Consistency generations (0 tokens: none).
    """
    editor = get_editor(method)
    asked = editor.hparams_type() if hparams is None else hparams
    check_record_fits(model, record, generation_tokens)
    if before is None:
        before = measure(model, record, stop_words=stop_words)
    start = time.perf_counter()
    edit = editor.compute(model, record.request, hparams)
    seconds = time.perf_counter() - start
    with apply_edit(model, edit):  # reverted on every exit
        after = measure(model, record, before.tokens)
        texts = generate(model, record.generation_prompts, n_tokens=generation_tokens, top_k=top_k, seed=seed)
    return case_evaluation(record, method, asked, edit, before, after, texts, seconds)


def case_evaluation(record: Record, method: str, asked, edit, before: Measurement, after: Measurement,
                    texts: tuple[str, ...], seconds: float) -> CaseEvaluation:
    """The CaseEvaluation of ``record`` from its measurements and generations under ``edit``."""
    result = CaseResult(record.case_id, **after.metrics(), fluency=m.fluency(texts),
                        consistency=m.consistency(texts, record.reference_texts), efficacy_at_1=after.efficacy_at_1)
    return CaseEvaluation(result, method, before, texts, seconds, as_run(asked.to_dict(), edit.hparams))


def as_run(asked: Mapping[str, object], ran: Mapping[str, object]) -> dict[str, object]:
    """The fields of the edit's hyperparameters (``ran``) that differ from those asked for, as JSON."""
    asked, ran = json.loads(json.dumps(dict(asked))), json.loads(json.dumps(dict(ran)))
    return {key: value for key, value in ran.items() if asked.get(key) != value}


def evaluate_record(model, record: Record, method: str, hparams, *,
                    stop_words: frozenset[str] = m.FALLBACK_STOP_WORDS, before: Measurement | None = None,
                    generation_tokens: int = GENERATION_TOKENS, top_k: int = GENERATION_TOP_K,
                    seed: int = 0) -> CaseResult:
    """The post-edit metrics of one record (see evaluate_case for the arguments)."""
    return evaluate_case(model, record, method, hparams, stop_words=stop_words, before=before,
                         generation_tokens=generation_tokens, top_k=top_k, seed=seed).result

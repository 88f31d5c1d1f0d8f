"""Probabilities of targets after prompts, batched: what edits are judged by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from toplens.model import ModelAdapter, as_adapter
from toplens.core.positions import target_ids


@dataclass(frozen=True)
class TopToken:
    token: str
    token_id: int
    prob: float


@torch.no_grad()
def target_logprobs(model, prompts: Sequence[str], targets: Sequence[str]) -> list[torch.Tensor]:
    """log P of each target token given the prompt and the earlier target tokens (teacher forcing).

    One batched forward; the unembedding and softmax run only at the positions that predict a
    target token."""
    adapter: ModelAdapter = as_adapter(model)
    seqs, rows, cols, ids, sizes = [], [], [], [], []
    for row, (prompt, target) in enumerate(zip(prompts, targets, strict=True)):
        prompt_ids = adapter.tokenize(prompt)
        target_tokens = target_ids(adapter, prompt, target, field="target")
        seqs.append(prompt_ids + target_tokens)
        rows += [row] * len(target_tokens)
        cols += range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(target_tokens))
        ids += target_tokens
        sizes.append(len(target_tokens))
    if not seqs:
        return []
    tokens = adapter.to_batch(seqs)
    index = lambda xs: torch.tensor(xs, dtype=torch.long, device=tokens.device)  # noqa: E731
    logp = adapter.logits_at(tokens, index(rows), index(cols)).float().log_softmax(-1)
    picked = logp.gather(1, index(ids)[:, None]).squeeze(1).cpu()
    return list(picked.split(sizes))


def target_probability(model, prompt: str, target: str) -> float:
    """P(target | prompt) for a whole (possibly multi-token) target."""
    return float(target_logprobs(model, [prompt], [target])[0].sum().exp())


def top_tokens(model, prompt: str, k: int = 5) -> list[TopToken]:
    """The k most likely next tokens after ``prompt``."""
    adapter = as_adapter(model)
    probs = adapter.next_token_probs(prompt)
    top = probs.topk(k)
    return [TopToken(adapter.decode(int(i)), int(i), float(p)) for p, i in zip(top.values, top.indices)]

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
    """log P of each target token given the prompt and the earlier target tokens (teacher forcing)."""
    adapter: ModelAdapter = as_adapter(model)
    seqs, spans = [], []
    for prompt, target in zip(prompts, targets, strict=True):
        prompt_ids = adapter.tokenize(prompt)
        ids = target_ids(adapter, prompt, target, field="target")
        seqs.append(prompt_ids + ids)
        spans.append((len(prompt_ids), ids))
    logits = adapter.logits(adapter.to_batch(seqs)).float().log_softmax(-1)
    out = []
    for row, (start, ids) in enumerate(spans):
        positions = torch.arange(start - 1, start - 1 + len(ids), device=logits.device)
        out.append(logits[row, positions, torch.tensor(ids, device=logits.device)].cpu())
    return out


def target_probability(model, prompt: str, target: str) -> float:
    """P(target | prompt) for a whole (possibly multi-token) target."""
    return float(target_logprobs(model, [prompt], [target])[0].sum().exp())


def top_tokens(model, prompt: str, k: int = 5) -> list[TopToken]:
    """The k most likely next tokens after ``prompt``."""
    adapter = as_adapter(model)
    probs = adapter.next_token_probs(prompt)
    top = probs.topk(k)
    return [TopToken(adapter.decode(int(i)), int(i), float(p)) for p, i in zip(top.values, top.indices)]

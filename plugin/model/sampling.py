"""Seeded top-k sampling in which every row draws from its own random stream.

A row's continuation then depends only on its prompt, its seed and the model it runs under, never
on which other rows share its batch: the prompts of many cases, each under its own edit
(:func:`toplens.core.row_edits.per_row_edits`), sample the same texts together as one at a time,
up to float order.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from toplens.model.adapter import as_adapter


def prompt_seed(seed: int, prompt: str) -> int:
    """The random stream of one prompt's continuation: a hash of the run's seed and the prompt."""
    return zlib.crc32(f"{seed}\x00{prompt}".encode("utf-8"))


@torch.no_grad()
def sample_rows(model, prompts: Sequence[Sequence[int]], n_tokens: int, top_k: int,
                seeds: Sequence[int]) -> list[list[int]]:
    """``n_tokens`` top-k samples after each equal-length prompt (returned with the prompt), row i
    drawn from a generator seeded with ``seeds[i]``, under the active hooks. ``top_k=1`` is greedy."""
    if len(seeds) != len(prompts) or len({len(p) for p in prompts}) > 1:
        raise ValueError(f"sample_rows needs equal-length prompts and one seed per prompt; got prompt lengths "
                         f"{sorted({len(p) for p in prompts})} and {len(seeds)} seeds for {len(prompts)} prompts")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer; got {top_k!r}")
    adapter = as_adapter(model)
    tokens = adapter.to_batch(prompts)
    if n_tokens <= 0 or not prompts:
        return tokens.tolist()
    streams = [torch.Generator().manual_seed(int(s)) for s in seeds]
    step = adapter.decoder(tokens)
    logits, drawn = step(None), []
    for t in range(n_tokens):
        drawn.append(_draw(logits, top_k, streams).to(tokens.device))
        if t + 1 < n_tokens:
            logits = step(drawn[-1])
    return torch.cat([tokens, torch.stack(drawn, 1)], 1).tolist()


def _draw(logits: Float[Tensor, "batch d_vocab"], top_k: int,
          streams: Sequence[torch.Generator]) -> Int[Tensor, " batch"]:
    """One token per row from its top-k distribution, drawn on the CPU from the row's own stream.
    The k candidates are ordered by token id, so a float-order change of their logits moves the
    draw's boundaries slightly instead of reordering them."""
    _, ids = logits.float().topk(min(top_k, logits.shape[-1]), dim=-1)
    ids = ids.sort(dim=-1).values
    probs = logits.float().gather(1, ids).softmax(-1).cpu()
    picks = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, streams, strict=True)])
    return ids.gather(1, picks.to(ids.device)).squeeze(1)

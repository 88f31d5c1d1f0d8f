"""Keys and values at the edit site: the MLP input of W_out (key) and the MLP output (value)."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.positions import locate
from toplens.core.templates import fill
from toplens.model import ModelAdapter, hook_name

KeyMode = Literal["consistent", "original", "sink"]
KEY_MODES: tuple[str, ...] = ("consistent", "original", "sink")
"""Which key k* a rank-one edit writes at: the mean over context-prefixed prompts ("consistent",
ROME's choice), the bare prompt's alone ("original"), or the mean and, where the subject is one
token at the first position, the bare prompt's key as well ("sink", :mod:`toplens.core.sink`)."""

Role = Literal["subject", "relation"]
"""Which token of a prompt an edit works at: the last subject token or the last prompt token
(the last relation token)."""


@torch.no_grad()
def key_value_at(
    adapter: ModelAdapter, layer: int, texts_and_subjects: Sequence[tuple[str, str]], role: Role = "subject"
) -> tuple[Float[Tensor, "n d_mlp"], Float[Tensor, "n d_model"]]:
    """Keys and values at ``layer`` at the last subject token (or last token, role="relation")
    of each filled template ``(template, subject)``."""
    positions = [locate(adapter, t, s) for t, s in texts_and_subjects]
    tokens = adapter.to_batch([p.tokens for p in positions])
    cols = torch.tensor([p.last_subject if role == "subject" else p.last_relation for p in positions],
                        device=tokens.device)
    rows = torch.arange(len(positions), device=tokens.device)
    key, value = adapter.capture(tokens, [hook_name("key", layer), hook_name("value", layer)], layer + 1)
    return key[rows, cols], value[rows, cols]


def mean_key(
    adapter: ModelAdapter, layer: int, templates: Sequence[str], prompt: str, subject: str, role: Role = "subject"
) -> Float[Tensor, " d_mlp"]:
    """k*: the key at ``role``'s token, averaged over the context templates of ``prompt``."""
    filled = [(fill(t, prompt), subject) for t in templates]
    keys, _ = key_value_at(adapter, layer, filled, role)
    return keys.mean(0)

"""Fingerprints of a model's edited weights, to check that a revert restores them bit for bit."""

from __future__ import annotations

import hashlib
from typing import Iterable

import torch

from toplens.model import ModelAdapter


def weight_hashes(adapter: ModelAdapter, layers: Iterable[int]) -> dict[int, str]:
    """sha256 of each layer's W_out bytes (to prove a revert is bit-exact)."""
    out = {}
    for layer in layers:
        tensor = adapter.w_out(layer).detach().contiguous().cpu()
        out[layer] = hashlib.sha256(tensor.view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    return out

"""The first position as an edit site: a subject of one token at the start of a prompt.

A model that prepends no BOS token reads the first token of a prompt with no context, and at the
early layers every first token writes nearly the same MLP key: on SmolLM2-135M at layer 5 the
keys of "France" and "Germany" at position 0 have cosine 0.95, while "France" at position 0 and
"France" inside a sentence have 0.17. A fold keyed on the context templates' mean key therefore
misses the bare prompt, and one keyed on the bare prompt rewrites every first token.
``key="sink"`` maps both keys to v* (:func:`toplens.core.fold.fold_at`), with the second solved
against the second moment of first-position keys over the whole vocabulary: the directions that
all first tokens share then weigh little, and what sets this one apart weighs much.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from toplens.core.keys import Role, key_value_at
from toplens.core.positions import locate
from toplens.core.requests import EditRequest
from toplens.model import ModelAdapter, hook_name
from toplens.model.identity import active_hooks, weights_digest

#: the ridge added to the first-position second moment, in units of its mean diagonal entry
SINK_RIDGE = 1e-1

_MOMENTS: dict[tuple[str, int, float], Tensor] = {}  # (weights below the layer's W_out, layer, ridge) -> E[k kᵀ]


def at_sink(adapter: ModelAdapter, request: EditRequest, role: Role = "subject") -> bool:
    """Whether the bare prompt's ``role`` token (the last subject token) is its first token."""
    if role != "subject":
        return False
    return locate(adapter, request.prompt, request.subject).last_subject == 0


def sink_key(adapter: ModelAdapter, layer: int, request: EditRequest,
             role: Role = "subject") -> Float[Tensor, " d_mlp"] | None:
    """The bare prompt's key at ``layer`` where :func:`at_sink` holds (the second key of
    ``key="sink"``), else None."""
    if not at_sink(adapter, request, role):
        return None
    return key_value_at(adapter, layer, [(request.prompt, request.subject)], role=role)[0][0]


def sink_moment(adapter: ModelAdapter, layer: int) -> Float[Tensor, "d_mlp d_mlp"]:
    """E[k kᵀ] (float64) of the MLP keys at ``layer`` of every vocabulary token alone at the first
    position, plus ``SINK_RIDGE`` times its mean diagonal; kept per weights and layer while the
    process lives (computed again, and not kept, under active hooks)."""
    if active_hooks(adapter.model):
        return _moment(adapter, layer)
    memo = (weights_digest(adapter, skip_w_out_from=layer), layer, SINK_RIDGE)
    if memo not in _MOMENTS:
        if len(_MOMENTS) >= 4:
            _MOMENTS.pop(next(iter(_MOMENTS)))
        _MOMENTS[memo] = _moment(adapter, layer)
    return _MOMENTS[memo]


@torch.no_grad()
def _moment(adapter: ModelAdapter, layer: int, batch_size: int = 4096) -> Float[Tensor, "d_mlp d_mlp"]:
    total = torch.zeros(adapter.d_mlp, adapter.d_mlp, dtype=torch.float64, device=adapter.device)
    vocab = adapter.cfg.d_vocab
    for start in range(0, vocab, batch_size):
        ids = torch.arange(start, min(start + batch_size, vocab), device=adapter.device)[:, None]
        (keys,) = adapter.capture(ids, [hook_name("key", layer)], layer + 1)
        total += keys[:, 0].double().T @ keys[:, 0].double()
    moment = total / vocab
    ridge = SINK_RIDGE * float(moment.diagonal().mean())
    return moment + ridge * torch.eye(adapter.d_mlp, dtype=torch.float64, device=adapter.device)

"""Layer × position maps with token labels: what causal tracing and gradient saliency produce.

A plain dataclass of a tensor and strings, drawn by :mod:`toplens.analyses.figures`; the role of each
prompt position groups the tokens as the paper does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from jaxtyping import Float
from torch import Tensor

from toplens.core.positions import PromptPositions
from toplens.model import ModelAdapter

# The role of each prompt position, as the paper groups them.
ROLES = ("other", "subject", "last_subject", "relation", "last_relation")


def position_roles(n_positions: int, subject: range, last_relation: int) -> list[str]:
    """Role of each position: subject tokens, the last subject token, relation tokens, the last one."""
    roles = []
    for i in range(n_positions):
        if i == subject.stop - 1:
            roles.append("last_subject")
        elif i in subject:
            roles.append("subject")
        elif i == last_relation:
            roles.append("last_relation")
        elif subject.stop <= i < last_relation:
            roles.append("relation")
        else:
            roles.append("other")
    return roles


@dataclass(frozen=True)
class LayerPositionMap:
    """A [n_layers, n_positions] grid of one quantity over a prompt, with its token labels.

    Attributes:
        values: the grid (layer-major).
        tokens: the token string at each position.
        roles: the role of each position (see ``ROLES``).
        quantity: what the values are ("grad_norm", "indirect_effect", ...).
        title: a short human description for plots and tables.
    """

    values: Float[Tensor, "layer pos"]
    tokens: Sequence[str]
    roles: Sequence[str]
    quantity: str
    title: str = ""

    def __post_init__(self) -> None:
        n_pos = self.values.shape[-1]
        if len(self.tokens) != n_pos or len(self.roles) != n_pos:
            raise ValueError(f"LayerPositionMap: {n_pos} positions but {len(self.tokens)} tokens "
                             f"and {len(self.roles)} roles")

    def argmax_positions(self) -> list[int]:
        """The position of the largest value in each layer."""
        return [int(i) for i in self.values.argmax(dim=-1)]

    def role_means(self) -> dict[str, Float[Tensor, " layer"]]:
        """Per layer, the mean over the positions of each role that occurs."""
        out = {}
        for role in ROLES:
            idx = [i for i, r in enumerate(self.roles) if r == role]
            if idx:
                out[role] = self.values[:, idx].mean(dim=-1)
        return out


def token_labels(adapter: ModelAdapter, positions: PromptPositions) -> tuple[list[str], list[str]]:
    """The decoded token and the role of every prompt position."""
    tokens = [adapter.decode(t) for t in positions.tokens]
    roles = position_roles(len(tokens), positions.subject_span, positions.last_relation)
    return tokens, roles

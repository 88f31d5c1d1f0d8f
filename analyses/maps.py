"""Result types of the analyses: layer × position maps with token labels, RIE rows, sweep points.

They are plain dataclasses of tensors and strings, shared by the analyses that compute them
(saliency, causal tracing, RIE, the la sweep) and by the figures that draw them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from jaxtyping import Float
from torch import Tensor

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


@dataclass(frozen=True)
class RieRow:
    """RIE of one method over a set of requests, at the last subject and last relation tokens."""

    method: str
    subject: float
    relation: float
    n: int


@dataclass(frozen=True)
class SweepCase:
    """One record's four rates (percent) at one la: which cases an la wins or loses."""

    case_id: int | str
    efficacy: float | None
    generalization: float | None
    s_specificity: float | None
    r_specificity: float | None


@dataclass(frozen=True)
class SweepPoint:
    """TOP's quality at one relation-feature layer la (rates in percent, means over the records),
    with each record's own rates in ``cases``."""

    la: int
    efficacy: float | None
    generalization: float | None
    s_specificity: float | None
    r_specificity: float | None
    cases: tuple[SweepCase, ...] = ()

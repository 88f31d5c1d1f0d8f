"""The one optimization loop every editor and stage uses (ROME, RETS, MEMIT, both TOP stages).

The loss differs; the loop does not: Adam on a single vector, a norm clamp after each step,
early stop under a threshold, a NaN/inf guard, an optional progress bar, and a per-step callback
that analyses use to observe the optimization (the gradient is on ``delta.grad`` when it runs).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient became NaN/inf; the edit is abandoned before any weight changes."""


@dataclass(frozen=True)
class LossTerms:
    """One evaluation of an objective: the total to minimize and its named parts (floats)."""

    total: Tensor
    nll: float | None = None
    kl: float | None = None
    decay: float | None = None
    distance: float | None = None
    rewrite_nll: float | None = None  # a ROME term added to another objective (TOP's stage 2)
    penalty: float | None = None  # a weighted term that holds the model in place (core.preservation)

    def parts(self) -> dict[str, float]:
        return {k: v for k, v in (("nll", self.nll), ("kl", self.kl), ("decay", self.decay),
                                  ("distance", self.distance), ("rewrite_nll", self.rewrite_nll),
                                  ("penalty", self.penalty)) if v is not None}


@dataclass(frozen=True)
class LoopSettings:
    """Steps (forward evaluations at most), Adam's learning rate, the clamp on ‖δ‖ and the early stop
    (the loss it compares, ``stop_rule``, and the threshold)."""

    steps: int
    lr: float
    max_norm: float | None
    stop_below: float
    desc: str = "optimize"
    progress: bool = False
    stop_rule: str = "total"

    def stops(self, terms: "LossTerms") -> bool:
        """Whether the loss is below ``stop_below``: the whole loss ("total"), or only the part
        that fits the targets ("fit": the NLL where the loss has one, else the loss without its
        weight-decay and penalty terms), so that the regularizers cannot keep a converged edit running."""
        if self.stop_rule == "fit":
            rest = (terms.decay or 0.0) + (terms.penalty or 0.0)
            fit = terms.nll if terms.nll is not None else float(terms.total.detach()) - rest
            return fit < self.stop_below
        return float(terms.total.detach()) < self.stop_below


@dataclass(frozen=True)
class StepEvent:
    """What a callback sees after each backward pass, before the optimizer step; with ``final``
    set, the last evaluation of the loop (no gradient, no step follows)."""

    step: int
    loss: float
    terms: LossTerms
    delta: Tensor
    final: bool = False


@dataclass(frozen=True)
class OptimizationTrace:
    """The loss curve and outcome of one optimization (plot ``losses`` in a notebook)."""

    losses: tuple[float, ...]
    parts: tuple[dict[str, float], ...] = field(repr=False)
    steps: int
    converged: bool
    delta_norm: float


def _guard(value: Tensor, what: str, desc: str, step: int) -> None:
    if not bool(torch.isfinite(value).all()):
        raise NonFiniteLossError(
            f"{desc}: the {what} became NaN or inf at step {step}; the edit was abandoned and no "
            "weight was changed"
        )


def optimize(
    objective: Callable[[Tensor], LossTerms],
    delta: Tensor,
    settings: LoopSettings,
    callback: Callable[[StepEvent], None] | None = None,
) -> OptimizationTrace:
    """Minimize ``objective(delta)`` over ``delta`` in place; return the loss curve.

    ``steps`` bounds the forward evaluations; as in the reference code the last evaluation is not
    followed by an update, and the loop stops as soon as the loss is below ``stop_below``.
    ``callback`` sees every step after its backward pass, and the last evaluation as ``final``.
    """
    delta.requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=settings.lr)
    losses, parts, updates, converged = [], [], 0, False
    bar = tqdm(range(settings.steps), desc=settings.desc, disable=not settings.progress, leave=False)
    for step in bar:
        opt.zero_grad()
        terms = objective(delta)
        _guard(terms.total.detach(), "loss", settings.desc, step)
        loss = float(terms.total.detach())
        losses.append(loss)
        parts.append(terms.parts())
        bar.set_postfix(loss=f"{loss:.4f}")
        converged = settings.stops(terms)
        if converged or step == settings.steps - 1:
            if callback is not None:
                callback(StepEvent(step, loss, terms, delta, final=True))
            break
        terms.total.backward()
        _guard(delta.grad, "gradient", settings.desc, step)
        if callback is not None:
            callback(StepEvent(step, loss, terms, delta))
        opt.step()
        updates += 1
        _clamp(delta, settings.max_norm, settings.desc, step)
    delta.requires_grad_(False)
    logger.debug("%s: %d updates, final loss %.4g", settings.desc, updates, losses[-1])
    return OptimizationTrace(tuple(losses), tuple(parts), updates, converged, float(delta.norm()))


def _clamp(delta: Tensor, max_norm: float | None, desc: str, step: int) -> None:
    """Scale δ down to ``max_norm``. A norm that is not finite (δ holds inf or NaN, or its square
    overflows the dtype) raises rather than scaling δ to zero."""
    if max_norm is None or not math.isfinite(max_norm):
        return
    with torch.no_grad():
        norm = delta.norm()
        if not bool(torch.isfinite(norm)):
            raise NonFiniteLossError(
                f"{desc}: the norm of δ overflowed to {float(norm)} after step {step} (is the learning rate "
                "too large?); the edit was abandoned and no weight was changed"
            )
        if norm > max_norm:
            delta.mul_(max_norm / norm)

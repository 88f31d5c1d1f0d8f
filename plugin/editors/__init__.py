"""The editors: each a hyperparameter dataclass and a function that returns a ``WeightEdit``.

Every editor module has the same shape: ``<Name>Hparams``, ``compute(model, request, hparams)``
returning a ``WeightEdit`` (the model is not changed) and ``apply(model, requests, hparams)``
returning an ``EditHandle``.
"""

from __future__ import annotations

from types import ModuleType

from . import rome
from .rome import RomeHparams, apply_rome, compute_rome

_EDITORS: dict[str, ModuleType] = {"rome": rome}


def get_editor(method: str) -> ModuleType:
    """The editor module for a method name."""
    if method not in _EDITORS:
        raise ValueError(f"method must be one of {sorted(_EDITORS)}; got {method!r}")
    return _EDITORS[method]


__all__ = ["rome", "RomeHparams", "compute_rome", "apply_rome", "get_editor"]

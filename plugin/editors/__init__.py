"""The editors: each a hyperparameter dataclass and a function that returns a ``WeightEdit``.

Every editor module has the same shape: ``<Name>Hparams``, ``compute(model, request, hparams)``
returning a ``WeightEdit`` (the model is not changed) and ``apply(model, requests, hparams)``
returning an ``EditHandle``.
"""

from __future__ import annotations

from types import ModuleType

from toplens.editors import memit, rets, rome, top
from toplens.editors.memit import MemitHparams, apply_memit, compute_memit
from toplens.editors.rets import RetsHparams, apply_rets, compute_rets
from toplens.editors.rome import RomeHparams, apply_rome, compute_rome
from toplens.editors.top import TopHparams, apply_top, compute_top

_EDITORS: dict[str, ModuleType] = {"rome": rome, "top": top, "rets": rets, "memit": memit}


def get_editor(method: str) -> ModuleType:
    """The editor module for a method name."""
    if method not in _EDITORS:
        raise ValueError(f"method must be one of {sorted(_EDITORS)}; got {method!r}")
    return _EDITORS[method]


__all__ = [
    "get_editor", "memit", "rets", "rome", "top",
    "MemitHparams", "RetsHparams", "RomeHparams", "TopHparams",
    "apply_memit", "apply_rets", "apply_rome", "apply_top",
    "compute_memit", "compute_rets", "compute_rome", "compute_top",
]

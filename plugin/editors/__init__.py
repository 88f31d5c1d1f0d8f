"""The editors behind one interface (:class:`toplens.editors.base.Editor`).

Every editor module has the same shape: ``<Name>Hparams``, ``stages(hparams)``, the computation of
one request (or of a batch, for MEMIT), ``EDITOR``, and ``compute(model, requests, hparams, *,
observe=None) -> WeightEdit`` and ``apply(model, requests, hparams) -> EditHandle``. No editor
imports another; what they share lives in :mod:`toplens.core`.
"""

from __future__ import annotations

from toplens.core.edit_file import METHODS
from toplens.editors import memit, rets, rome, top
from toplens.editors.base import Editor, as_requests
from toplens.editors.memit import MemitHparams
from toplens.editors.rets import RetsHparams
from toplens.editors.rome import RomeHparams
from toplens.editors.top import TopHparams

_EDITORS: dict[str, Editor] = {e.name: e for e in (rome.EDITOR, top.EDITOR, rets.EDITOR, memit.EDITOR)}
METHODS.update(_EDITORS)  # the methods a saved edit may name


def get_editor(method: str) -> Editor:
    """The editor registered under ``method``."""
    if method not in _EDITORS:
        raise ValueError(f"method must be one of {sorted(_EDITORS)}; got {method!r}")
    return _EDITORS[method]


def register_editor(editor: Editor) -> None:
    """Add (or replace) an editor, so that ``get_editor``, the evaluation and the CLI find it."""
    _EDITORS[editor.name] = editor
    METHODS.add(editor.name)


def editor_names() -> tuple[str, ...]:
    return tuple(_EDITORS)


__all__ = [
    "Editor", "MemitHparams", "RetsHparams", "RomeHparams", "TopHparams", "as_requests", "editor_names",
    "get_editor", "memit", "register_editor", "rets", "rome", "top",
]

"""toplens: edit facts in TransformerLens models (TOP, ROME, MEMIT, RETS) with ordinary hooks.

    from toplens import load_model, EditRequest, get_editor, get_preset, apply_edit

    model = load_model()                       # the bundled SmolLM2-135M-Instruct, offline
    request = EditRequest("The mother tongue of {} is", "Danielle Darrieux", " English", " French")
    edit = get_editor("top").compute(model, request, get_preset("top", None))   # model unchanged
    with apply_edit(model, edit):              # ΔW = U V added in place, restored bit for bit on exit
        ...

The layers (model, core, editors; analyses on top) are described in docs/architecture.md.
"""

import logging

from toplens.core.edits import EditDetails, EditHandle, LayerDelta, WeightEdit, apply_edit
from toplens.core.hparams import Hparams, HparamsError
from toplens.core.positions import PromptPositions, locate, target_ids
from toplens.core.requests import EditRequest, RequestError
from toplens.core.row_edits import per_row_edits
from toplens.core.stages import Stage, StageResult
from toplens.editors import Editor, editor_names, get_editor, memit, rets, rome, top
from toplens.editors.presets import get_preset
from toplens.model import ModelAdapter, Site, as_adapter, hook_name, load_model

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "EditDetails", "EditHandle", "EditRequest", "Editor", "Hparams", "HparamsError", "LayerDelta", "ModelAdapter",
    "PromptPositions", "RequestError", "Site", "Stage", "StageResult", "WeightEdit", "apply_edit", "as_adapter",
    "editor_names", "get_editor", "get_preset", "hook_name", "load_model", "locate", "memit", "per_row_edits", "rets",
    "rome", "target_ids", "top",
]

"""toplens.plugin: edit facts in TransformerLens models (TOP, ROME, MEMIT, RETS) with hooks."""

import logging

from toplens.core.fold import EditHandle, LayerDelta, WeightEdit, apply_edit
from toplens.model.loading import load_model
from toplens.model import ModelAdapter, Site, as_adapter, hook_name
from toplens.core.positions import PromptPositions, locate, target_ids
from toplens.core.requests import EditRequest, RequestError
from toplens.editors import rome

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "EditHandle", "EditRequest", "LayerDelta", "ModelAdapter", "PromptPositions", "RequestError",
    "Site", "WeightEdit", "apply_edit", "as_adapter", "hook_name", "load_model", "locate", "rome",
    "target_ids",
]

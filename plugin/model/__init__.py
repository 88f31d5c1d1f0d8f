"""The model layer: the only code that knows which TransformerLens backend it is talking to.

``ModelAdapter`` wraps a ``HookedTransformer`` or a ``TransformerBridge``; ``load_model`` loads
one (the bundled SmolLM2 by default); ``hook_name`` builds every hook-point name.
"""

from toplens.model.adapter import ModelAdapter, as_adapter
from toplens.model.loading import load_model
from toplens.model.names import Hook, HookKind, Site, hook_name
from toplens.model.prefix_cache import PrefixCache

__all__ = ["Hook", "HookKind", "ModelAdapter", "PrefixCache", "Site", "as_adapter", "hook_name", "load_model"]

"""Hyperparameter presets per model: the published ones, and ours for the bundled SmolLM2.

ROME's published values are from its GPT2-XL and GPT-J configs; the SmolLM2-135M values were
chosen by measurement (docs/presets.md says how).
"""

from __future__ import annotations

from .editors.rome import RomeHparams
from .hparams import Hparams

_ROME: dict[str, RomeHparams] = {
    "gpt2-xl": RomeHparams(layer=17, v_num_grad_steps=25, v_lr=0.5, v_weight_decay=0.5,
                           clamp_norm_factor=4.0, kl_factor=0.0625, mom2_adjustment=True),
    "gpt-j-6b": RomeHparams(layer=5, v_num_grad_steps=20, v_lr=0.5, v_weight_decay=0.5,
                            clamp_norm_factor=4.0, kl_factor=0.0625, mom2_adjustment=True),
    "qwen2.5-7b": RomeHparams(layer=5, v_num_grad_steps=20, v_lr=0.5, v_weight_decay=0.5,
                              clamp_norm_factor=4.0, kl_factor=0.0625, mom2_adjustment=False),
    # ours (docs/presets.md): the layer and mom2 setting of the measured reference run, 20 steps as
    # in the published GPT-J/GPT2-XL configs, and 5+5 context prefixes instead of 10+10.
    "smollm2-135m": RomeHparams(layer=5, v_num_grad_steps=20, v_lr=0.5, v_weight_decay=0.5,
                                clamp_norm_factor=4.0, kl_factor=0.0625, mom2_adjustment=False,
                                context_lengths=((5, 5), (5, 10))),
}
_TABLES: dict[str, dict[str, Hparams]] = {"rome": _ROME}
_DEFAULTS: dict[str, type[Hparams]] = {"rome": RomeHparams}
_ALIASES = {
    "gpt2-xl": "gpt2-xl", "gpt-j-6b": "gpt-j-6b", "gpt-j": "gpt-j-6b", "gptj": "gpt-j-6b",
    "qwen2.5-7b": "qwen2.5-7b", "qwen2.5-7b-instruct": "qwen2.5-7b", "smollm2": "smollm2-135m",
    "smollm2-135m": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m",
}


def model_key(model_name: str | None) -> str | None:
    """Normalize a model name ("EleutherAI/gpt-j-6b" -> "gpt-j-6b"); None if unknown."""
    if not model_name:
        return "smollm2-135m"
    base = str(model_name).rstrip("/").split("/")[-1].lower()
    return _ALIASES.get(base)


def methods() -> tuple[str, ...]:
    return tuple(_TABLES)


def register(method: str, model: str, hparams: Hparams) -> None:
    """Add or replace a preset (editors register theirs at import)."""
    _TABLES.setdefault(method, {})[model] = hparams
    _DEFAULTS.setdefault(method, type(hparams))


def get_preset(method: str, model_name: str | None, n_layers: int | None = None) -> Hparams:
    """The preset of ``method`` for a model; unknown models get the method's defaults with the
    layer moved to the same relative depth as the SmolLM2 preset (and clipped to the model)."""
    if method not in _TABLES:
        raise ValueError(f"method must be one of {sorted(_TABLES)}; got {method!r}")
    key = model_key(model_name)
    table = _TABLES[method]
    if key in table:
        return table[key]
    fallback = table.get("smollm2-135m") or _DEFAULTS[method]()
    if n_layers is None or not hasattr(fallback, "layer"):
        return fallback
    return fallback.replace(layer=max(0, min(n_layers - 1, round(n_layers * 5 / 30))))

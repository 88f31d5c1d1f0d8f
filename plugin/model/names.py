"""Where activations live: TransformerLens hook names, built in exactly one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

HookKind = Literal["key", "value", "resid_pre", "resid_post", "resid_mid", "attn_out", "embed"]
Hook = tuple[str, Callable]

_HOOK_TEMPLATES: dict[str, str] = {
    "key": "blocks.{layer}.mlp.hook_post",
    "value": "blocks.{layer}.hook_mlp_out",
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "attn_out": "blocks.{layer}.hook_attn_out",
}


def hook_name(kind: HookKind, layer: int | None = None) -> str:
    """The TransformerLens hook name of an activation: the one place these strings are built."""
    if kind == "embed":
        return "hook_embed"
    if kind not in _HOOK_TEMPLATES:
        raise ValueError(f"hook kind must be one of {sorted(_HOOK_TEMPLATES) + ['embed']}; got {kind!r}")
    if layer is None:
        raise ValueError(f"hook kind {kind!r} needs a layer")
    return _HOOK_TEMPLATES[kind].format(layer=layer)


@dataclass(frozen=True)
class Site:
    """Where an activation lives: a hook kind at a layer (and optionally one token position)."""

    kind: HookKind
    layer: int | None = None
    position: int | None = None

    @property
    def name(self) -> str:
        return hook_name(self.kind, self.layer)

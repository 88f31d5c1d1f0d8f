"""Hyperparameter presets per model: the published ones, and ours for the bundled SmolLM2.

ROME's published values are from its GPT2-XL and GPT-J configs; the SmolLM2-135M values were
chosen by measurement (docs/presets.md says how). The bundled model's presets run on the fast path
(:func:`fast_path`, ROME's on the shorter :func:`short_path`: their quality against the reference
path is in docs/fast_path_quality.md); the
same values on the reference path, as first measured, are "smollm2-135m-reference". The faithful
TOP preset stays on the reference path, as published.
"""

from __future__ import annotations

from toplens.editors.memit import MemitHparams
from toplens.editors.rets import RetsHparams
from toplens.editors.rome import RomeHparams
from toplens.editors.top import TopHparams
from toplens.core.hparams import Hparams

_COMMON = dict(v_lr=0.5, v_weight_decay=0.5, clamp_norm_factor=4.0, kl_factor=0.0625)

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
# TOP: the official code's configs; stage2="faithful" is the published stage 2.
_TOP: dict[str, TopHparams] = {
    "gpt2-xl": TopHparams(layers=(17, 18), rel_feat_layer=1, v_num_grad_steps1=25, v_num_grad_steps2=25,
                          vec_loss_factor=0.1, mom2_adjustment=True, stage2="faithful", **_COMMON),
    "gpt-j-6b": TopHparams(layers=(5,), rel_feat_layer=5, v_num_grad_steps1=20, v_num_grad_steps2=20,
                           vec_loss_factor=0.06, mom2_adjustment=True, stage2="faithful", **_COMMON),
    "qwen2.5-7b": TopHparams(layers=(5,), rel_feat_layer=5, v_num_grad_steps1=20, v_num_grad_steps2=20,
                             vec_loss_factor=0.1, mom2_adjustment=False, stage2="faithful", **_COMMON),
    # ours (docs/top_stage2.md): stage 2 matched through the prediction read from h_r ("readout")
    # rather than in L2, and optimized as the rank-one update the fold makes ("fold"): the published
    # stage 2 cannot reach h*_r through this model's narrow subject-to-relation channel. key="sink"
    # also keys a one-token subject at the first position (which SmolLM2, with no BOS, reads without
    # context) on the bare prompt (core.sink). "smollm2-135m-l5" (the twelfth session's preset):
    # edit layer 5, la = 23. "smollm2-135m" (thirteenth session): edit layer 8 (Generalization), C⁻¹
    # in the fold (S-Specificity back), and a KL holding what the model writes after the subject's
    # name, o and o* spared, at weight 3 (R-Specificity); docs/results.md has both on 200 cases.
    # "smollm2-135m-faithful" keeps the published algorithm and the Qwen2.5 values, 100 stage-2 steps.
    "smollm2-135m-l5": TopHparams(layers=(5,), rel_feat_layer=18, v_num_grad_steps1=20, v_num_grad_steps2=40,
                                  vec_loss_factor=0.1, mom2_adjustment=False, stage2="faithful",
                                  stage2_loss="readout", stage2_site="fold", context_lengths=((5, 5), (5, 10)),
                                  key="sink", **_COMMON),
    "smollm2-135m-faithful": TopHparams(layers=(5,), rel_feat_layer=5, v_num_grad_steps1=20, v_num_grad_steps2=100,
                                        vec_loss_factor=0.1, mom2_adjustment=False, stage2="faithful",
                                        context_lengths=((5, 5), (5, 10)), **_COMMON),
}
_TOP["smollm2-135m"] = _TOP["smollm2-135m-l5"].replace(layers=(8,), rel_feat_layer=15, mom2_adjustment=True,
                                                       stage2_reset="none", stage2_keep_weight=3.0,
                                                       stage2_keep_spare=True)
# ours: the layer-5 preset with stage2_keep_weight=5, for users who rank R-Specificity first
# (docs/top_stage2.md, eighth session: R-Spec 94.1 against 80.9, Generalization 61.3 against 72.3)
_TOP["smollm2-135m-specific"] = _TOP["smollm2-135m-l5"].replace(stage2_keep_weight=5.0)
# RETS: only the edit layers are published (GPT2-XL 35, GPT-J 17, Llama-2-7B 22); the rest are
# ROME's values, on which the RETS code is built.
_RETS: dict[str, RetsHparams] = {
    "gpt2-xl": RetsHparams(layer=35, mom2_adjustment=True),
    "gpt-j-6b": RetsHparams(layer=17, mom2_adjustment=True),
    "qwen2.5-7b": RetsHparams(layer=19, mom2_adjustment=False),  # Llama-2's relative depth, not published
    "smollm2-135m": RetsHparams(layer=20, v_num_grad_steps=20, mom2_adjustment=False,
                                context_lengths=((5, 5), (5, 10))),
}
# MEMIT: the official configs (GPT2-XL, GPT-J) and EasyEdit's (Qwen2.5-7B).
_MEMIT: dict[str, MemitHparams] = {
    "gpt2-xl": MemitHparams(layers=(13, 14, 15, 16, 17), v_num_grad_steps=20, v_lr=0.5, v_weight_decay=0.5,
                            clamp_norm_factor=0.75, kl_factor=0.0625, mom2_adjustment=True,
                            mom2_update_weight=20000.0),
    "gpt-j-6b": MemitHparams(layers=(3, 4, 5, 6, 7, 8), v_num_grad_steps=25, v_lr=0.5, v_weight_decay=0.5,
                             clamp_norm_factor=0.75, kl_factor=0.0625, mom2_adjustment=True,
                             mom2_update_weight=15000.0),
    "qwen2.5-7b": MemitHparams(layers=(4, 5, 6, 7, 8), v_num_grad_steps=25, v_lr=0.5, v_weight_decay=1e-3,
                               clamp_norm_factor=4.0, kl_factor=0.0625, mom2_adjustment=True,
                               mom2_update_weight=15000.0),
    "smollm2-135m": MemitHparams(layers=(3, 4, 5, 6, 7), v_num_grad_steps=20, mom2_adjustment=False,
                                 mom2_update_weight=1.0, context_lengths=((5, 5), (5, 10))),
}
_TABLES: dict[str, dict[str, Hparams]] = {"rome": _ROME, "top": _TOP, "rets": _RETS, "memit": _MEMIT}
_DEFAULTS: dict[str, type[Hparams]] = {"rome": RomeHparams, "top": TopHparams, "rets": RetsHparams,
                                       "memit": MemitHparams}
_REFERENCE_DEPTH = 30  # SmolLM2-135M's layers: the fallback scales its presets by relative depth
_ALIASES = {
    "gpt2-xl": "gpt2-xl", "gpt-j-6b": "gpt-j-6b", "gpt-j": "gpt-j-6b", "gptj": "gpt-j-6b",
    "qwen2.5-7b": "qwen2.5-7b", "qwen2.5-7b-instruct": "qwen2.5-7b", "smollm2": "smollm2-135m",
    "smollm2-135m": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m",
    "smollm2-135m-faithful": "smollm2-135m-faithful", "smollm2-135m-specific": "smollm2-135m-specific",
    "smollm2-135m-reference": "smollm2-135m-reference", "smollm2-135m-l5": "smollm2-135m-l5",
    "smollm2-135m-fast": "smollm2-135m-fast",
}
#: the bundled model's presets that get_preset returns on the fast path
_FAST_BY_DEFAULT = ("smollm2-135m", "smollm2-135m-specific", "smollm2-135m-l5")
_REFERENCE = "smollm2-135m-reference"
_FAST = "smollm2-135m-fast"  # every bundled preset on the fast path, ROME's too (the runs before its short path)
#: an unknown model's TOP preset: the layer-5 one, which needs no statistics of the model (no C, no
#: sampled text of the subject), at the same relative depth
_FALLBACK = "smollm2-135m-l5"


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
    """The preset of ``method`` for a model. The bundled SmolLM2's (no name, "smollm2-135m", and
    TOP's variants "smollm2-135m-specific" and "-l5", which give the other methods their own) are on
    the fast path (a registered editor's without context templates as it is); "smollm2-135m-reference" gives the same values on
    the reference path; ROME's takes the short path (:func:`short_path`), and "smollm2-135m-fast"
    gives every method's on the fast path. An unknown model gets the SmolLM2 preset on the reference path (for TOP
    the layer-5 one, "smollm2-135m-l5") with its layer(s) moved to the same relative depth (and
    clipped to the model); ``fast_path`` opts in."""
    if method not in _TABLES:
        raise ValueError(f"method must be one of {sorted(_TABLES)}; got {method!r}")
    key = model_key(model_name)
    table = _TABLES[method]
    if key == _REFERENCE and "smollm2-135m" in table:
        return table["smollm2-135m"]
    if key in (*_FAST_BY_DEFAULT, _FAST) and "smollm2-135m" in table:  # a variant TOP names: the method's own preset
        chosen = table.get(key, table["smollm2-135m"])
        path = short_path if method in _SHORT_BY_DEFAULT and key != _FAST else fast_path
        return path(chosen) if hasattr(chosen, "context_lengths") else chosen
    if key in table:
        return table[key]
    fallback = table.get(_FALLBACK) or table.get("smollm2-135m") or _DEFAULTS[method]()
    return fallback if n_layers is None else _rescaled(fallback, n_layers)


def changed_fields(method: str, model_name: str) -> dict:
    """The fields (as JSON values) in which the preset ``model_name`` differs from the bundled
    model's default preset of ``method``: what a ``--hparams`` needs to run that preset."""
    then, now = get_preset(method, model_name).to_dict(), get_preset(method, None).to_dict()
    return {k: v for k, v in then.items() if now[k] != v}


def preset_or_given(method: str, given: Hparams | None, model_name: str | None, n_layers: int | None) -> Hparams:
    """``given`` when it is set (for a method with presets it must be that method's hyperparameter
    class; an editor registered without presets takes what it is given), else the preset of
    ``method`` for the model (:func:`get_preset`)."""
    if given is None:
        return get_preset(method, model_name, n_layers)
    expected = _DEFAULTS.get(method)
    if expected is not None and not isinstance(given, expected):
        raise ValueError(f"hparams must be a {expected.__name__} for method {method!r}; got {type(given).__name__}")
    return given


def _rescaled(hp: Hparams, n_layers: int) -> Hparams:
    scale = lambda layer: max(0, min(n_layers - 1, round(layer * n_layers / _REFERENCE_DEPTH)))  # noqa: E731
    return hp.relayered(scale, n_layers)


FAST_CONTEXT: tuple[tuple[int, int], ...] = ((2, 5),)
"""The fast path's context templates: the bare prompt and two 5-token prefixes (3 rewriting rows
instead of the reference path's 11)."""


def fast_path(hp: Hparams) -> Hparams:
    """The same settings on the fast path: the optimization's forward passes in bfloat16 autocast
    where the device has native bfloat16 (``precision="auto"``; float32 elsewhere), the early stop
    on the fit of the targets (``precision``, ``stop_rule`` of Hparams), and fewer rewriting rows
    (:data:`FAST_CONTEXT`). docs/benchmarks.md measures each lever."""
    return hp.replace(precision="auto", stop_rule="fit", context_lengths=FAST_CONTEXT)


#: the shorter optimization of :func:`short_path`, per hyperparameter class: Adam's learning rate set
#: to 1.0 (the presets' 0.5 doubled) and the fit stop at a looser threshold (ROME: mean NLL of o* over
#: the rewriting rows 0.2, P ≈ 0.82; TOP: stage 1's at 0.1, stage 2's fit stop at 0.2); ROME's few
#: short steps run in float32, which costs it about 12–14% of the time and saves the bfloat16 weight
#: casts' 260 MiB (docs/benchmarks.md)
SHORT_LEVERS: dict[type, dict[str, float | str]] = {
    RomeHparams: dict(v_lr=1.0, early_stop_loss=0.2, precision="float32"),
    TopHparams: dict(v_lr=1.0, v_lr2=1.0, early_stop1=0.1, early_stop2=0.2),
}
#: the methods whose bundled preset runs on the short path by default (docs/fast_path_quality.md)
_SHORT_BY_DEFAULT = ("rome",)


def short_levers_text() -> str:
    """:data:`SHORT_LEVERS` in words, for the benches' docs ("ROME v_lr 1.0, ...; TOP ...")."""
    return "; ".join(f"{cls.__name__.removesuffix('Hparams').upper()} " + ", ".join(f"{k} {v}" for k, v in levers.items())
                     for cls, levers in SHORT_LEVERS.items())


def short_path(hp: Hparams) -> Hparams:
    """The fast path (:func:`fast_path`) with fewer steps: Adam's learning rate set to 1.0 and the
    early stop at a looser fit of the targets (ROME, in float32, and TOP; other editors get the fast path).
    docs/benchmarks.md and docs/fast_path_quality.md measure it."""
    return fast_path(hp).replace(**SHORT_LEVERS.get(type(hp), {}))


def reference_path(hp: Hparams) -> Hparams:
    """``hp`` with the published precision and stop: float32 and the stop on the whole loss. The
    context templates stay as ``hp`` has them, so this undoes only those two levers of
    :func:`fast_path`; ``get_preset(method, "smollm2-135m-reference")`` is the whole reference path."""
    return hp.replace(precision="float32", stop_rule="total")

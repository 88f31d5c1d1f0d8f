"""The base of every editor's hyperparameter dataclass: typed, range-checked fields and a strict
JSON round trip.

Each field is coerced to its declared type before the editor's own checks (``_check``): an int
field takes 20 or 20.0 (JSON may write either) but refuses 20.5, a float field takes any real
number, a bool field only true or false, a tuple field a list. After them every float field must
be finite and no larger in size than its limit (:data:`FLOAT_LIMITS`), so a typo such as
``v_lr=1e30`` fails here and not as a silently vanishing δ.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import types
import typing
from typing import Any, Callable, ClassVar, Literal, Mapping, TypeVar

T = TypeVar("T", bound="Hparams")

#: the largest size of a float field not in :data:`FLOAT_LIMITS`
DEFAULT_FLOAT_LIMIT = 1e6
#: fields with another limit: Adam's rates (the published value is 0.5) and MEMIT's λ (C's scale)
FLOAT_LIMITS: Mapping[str, float] = {"v_lr": 10.0, "v_lr2": 10.0, "mom2_update_weight": 1e10}


class HparamsError(ValueError):
    """A hyperparameter is out of range or unknown; the message names it."""


def _as_int(where: str, value: Any) -> int:
    """An integer, given as one (numpy's too) or as an integral float (JSON may write 20.0)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    raise HparamsError(f"{where} must be an integer; got {value!r}")


_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(where: str, hint: Any, value: Any) -> Any:
    """``value`` as the type ``hint`` (int, float, bool, str, tuples of them); Literal and other
    hints are left to the editor's own checks."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise HparamsError(f"{where} must be true or false; got {value!r}")
        return value
    if hint is int:
        return _as_int(where, value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise HparamsError(f"{where} must be a number; got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise HparamsError(f"{where} must be a string; got {value!r}")
    if origin in (typing.Union, types.UnionType):  # e.g. int | Literal["auto"]: a named choice, else the type
        named = [a for a in args if typing.get_origin(a) is Literal]
        if any(value in typing.get_args(a) for a in named):
            return value
        plain = [a for a in args if a not in named]
        if len(plain) != 1:
            return value
        try:
            return _coerce(where, plain[0], value)
        except HparamsError:
            choices = [c for a in named for c in typing.get_args(a)]
            kind = _KINDS.get(plain[0], getattr(plain[0], "__name__", str(plain[0])))
            raise HparamsError(f"{where} must be {kind} or one of {choices}; got {value!r}") from None
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise HparamsError(f"{where} must be a list; got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise HparamsError(f"{where} must hold {len(items)} items; got {value!r}")
        return tuple(_coerce(f"{where}[{i}]", h, v) for i, (h, v) in enumerate(zip(items, value)))
    return value


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


PRECISIONS = ("float32", "bfloat16", "auto")
STOP_RULES = ("total", "fit")
PROJECTIONS = ("none", "nullspace")


@dataclasses.dataclass(frozen=True)
class Hparams:
    """Algorithm settings only (steps, rates, thresholds, prompts), never module paths.

    Two settings every editor shares decide how much work an optimization step does and when the
    optimization stops; their defaults are the published behaviour:

    Attributes:
        precision: "float32" (published), or "bfloat16": the model's forward passes while δ is
            optimized run under bfloat16 autocast; δ, the loss, Adam's state, the unembedding and
            everything measured after the optimization stay in float32. Only for a float32 model. "auto":
            bfloat16 where the device multiplies in it natively, else float32
            (:mod:`toplens.core.precision`).
        stop_rule: "total" (published): stop once the whole loss is below the stage's threshold;
            "fit": once the part that fits the targets is (the NLL, where the loss has one; else
            the loss without its weight-decay term), so that the KL and decay terms cannot keep
            a converged edit running to its last step.
        project: "none" (published), or "nullspace": the update's key direction is projected
            onto the null space of the preserved keys' second moment, so that ordinary text's
            MLP outputs at the edited layer barely move (after AlphaEdit;
            :mod:`toplens.core.nullspace`).
        nullspace_threshold: the eigenvalues of that second moment, as a share of the largest,
            at or below which a direction counts as free to edit.

    Subclasses check their values in ``_check`` (run after the fields are coerced to their types).
    """

    precision: str = dataclasses.field(default="float32", kw_only=True)
    stop_rule: str = dataclasses.field(default="total", kw_only=True)
    project: str = dataclasses.field(default="none", kw_only=True)
    nullspace_threshold: float = dataclasses.field(default=1e-2, kw_only=True)

    def __post_init__(self) -> None:
        for name, value in self._typed(vars(self)).items():
            object.__setattr__(self, name, value)
        self._choice("precision", PRECISIONS)
        self._choice("stop_rule", STOP_RULES)
        self._choice("project", PROJECTIONS)
        if not 0 < self.nullspace_threshold < 1:
            raise HparamsError(f"{type(self).__name__}.nullspace_threshold must be in (0, 1); "
                               f"got {self.nullspace_threshold!r}")
        self._check()
        self._finite_floats()

    def _loop_mode(self, settings):
        """``settings`` (a ValueSettings) with this editor's precision and stop rule."""
        return dataclasses.replace(settings, precision=self.precision, stop_rule=self.stop_rule)

    def _check(self) -> None:
        """The editor's own checks (ranges, choices, templates)."""

    @classmethod
    def _typed(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        types = dict(_field_types(cls))
        return {k: _coerce(f"{cls.__name__}.{k}", types[k], v) if k in types else v for k, v in data.items()}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise HparamsError(f"{cls.__name__} has no field(s) {unknown}; known: {sorted(names)}")
        return cls(**cls._typed(data))

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def replace(self: T, **changes: Any) -> T:
        return type(self).from_dict({**self.to_dict(), **changes})

    #: the field that holds the edit layer(s), for error messages
    layers_field: ClassVar[str] = "layers"

    # what every editor's hyperparameters answer, so that no caller probes with hasattr
    @property
    def edit_layers(self) -> tuple[int, ...]:
        """The layers whose W_out the edit changes."""
        raise NotImplementedError(f"{type(self).__name__} does not define edit_layers")

    def with_steps(self: T, steps: int) -> T:
        """The same settings with every optimization stage limited to ``steps`` steps."""
        raise NotImplementedError(f"{type(self).__name__} does not define with_steps")

    def relayered(self: T, scale: Callable[[int], int], n_layers: int) -> T:
        """The same settings with every layer index mapped through ``scale`` (presets use it to
        move a model's preset to another depth of ``n_layers`` layers)."""
        raise NotImplementedError(f"{type(self).__name__} does not define relayered")

    @staticmethod
    def _check_steps(steps: int) -> int:
        steps = _as_int("steps", steps)
        if steps < 1:
            raise HparamsError(f"steps must be a positive integer; got {steps!r}")
        return steps

    # helpers for _check of subclasses
    def _finite_floats(self) -> None:
        for name, hint in _field_types(type(self)):
            value, limit = getattr(self, name), FLOAT_LIMITS.get(name, DEFAULT_FLOAT_LIMIT)
            if hint is float and not (math.isfinite(value) and abs(value) <= limit):
                raise HparamsError(f"{type(self).__name__}.{name} must be a finite number of size at most "
                                   f"{limit:g}; got {value!r}")

    def _positive(self, *names: str, allow_zero: bool = False) -> None:
        for name in names:
            value = getattr(self, name)
            bad = not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            if bad or value < 0 or (value == 0 and not allow_zero):
                kind = "non-negative" if allow_zero else "positive"
                raise HparamsError(f"{type(self).__name__}.{name} must be a finite {kind} number; got {value!r}")

    def _choice(self, name: str, options: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in options:
            raise HparamsError(f"{type(self).__name__}.{name} must be one of {list(options)}; got {value!r}")

    def _template(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, str) or value.count("{}") != 1:
            raise HparamsError(f"{type(self).__name__}.{name} needs exactly one '{{}}'; got {value!r}")

    def _context_lengths(self, name: str = "context_lengths") -> None:
        """(count, tokens) pairs of the context templates, both positive."""
        value = getattr(self, name)
        if any(count < 1 or tokens < 1 for count, tokens in value):
            raise HparamsError(f"{type(self).__name__}.{name} must be [count, tokens] pairs of positive "
                               f"integers; got {value!r}")

    def _positive_items(self, name: str) -> None:
        """Every item of the tuple field ``name`` is a positive integer."""
        value = getattr(self, name)
        if any(v < 1 for v in value):
            raise HparamsError(f"{type(self).__name__}.{name} must hold positive integers; got {value!r}")

    def _value_optimization(self, *extra_positive: str) -> None:
        """The checks of the value-optimization settings ROME, RETS and MEMIT share."""
        self._positive("v_lr", "clamp_norm_factor", "early_stop_loss", "v_num_grad_steps", *extra_positive)
        self._positive("v_weight_decay", "kl_factor", allow_zero=True)
        self._template("kl_prompt")
        self._context_lengths()

    def _layers(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            items = value if isinstance(value, tuple) else (value,)
            if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in items):
                raise HparamsError(f"{type(self).__name__}.{name} must be non-negative layer index(es); got {value!r}")

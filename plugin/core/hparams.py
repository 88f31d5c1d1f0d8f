"""The base of every editor's hyperparameter dataclass: validation and a strict JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, ClassVar, Mapping, TypeVar

T = TypeVar("T", bound="Hparams")


class HparamsError(ValueError):
    """A hyperparameter is out of range or unknown; the message names it."""


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def _number(value: Any) -> Any:
    """JSON writes 1.0 as 1: an int given for a float field is that float (bools stay as they are)."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


@dataclasses.dataclass(frozen=True)
class Hparams:
    """Algorithm settings only (steps, rates, thresholds, prompts), never module paths."""

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
        floats = {f.name for f in dataclasses.fields(cls) if f.type in ("float", float)}
        return cls(**{k: _number(v) if k in floats else _tupled(v) for k, v in data.items()})

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
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise HparamsError(f"steps must be a positive int; got {steps!r}")
        return steps

    # helpers for __post_init__ of subclasses
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

    def _value_optimization(self, *extra_positive: str) -> None:
        """The checks of the value-optimization settings ROME, RETS and MEMIT share."""
        self._positive("v_lr", "clamp_norm_factor", "early_stop_loss", "v_num_grad_steps", *extra_positive)
        self._positive("v_weight_decay", "kl_factor", allow_zero=True)
        self._template("kl_prompt")

    def _layers(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            items = value if isinstance(value, tuple) else (value,)
            if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in items):
                raise HparamsError(f"{type(self).__name__}.{name} must be non-negative layer index(es); got {value!r}")

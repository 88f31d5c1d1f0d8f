"""EditRequest: one fact to rewrite, validated when it is made."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Mapping

logger = logging.getLogger(__name__)


class RequestError(ValueError):
    """A malformed edit request; the message names the field and the value."""


def _text(field: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, str):
        raise RequestError(f"EditRequest.{field} must be a string; got {value!r}")
    if not value.strip():
        raise RequestError(f"EditRequest.{field} must not be empty or whitespace only; got {value!r}")


def _normalized_target(field: str, value: str | None) -> str | None:
    """One space for each run of whitespace, none at the end, and one at the start when the value
    starts with whitespace: a trailing or doubled space would otherwise be a token of the target
    that the edit optimizes. Logs a warning when the value changes."""
    if value is None:
        return None
    text = (" " if value[:1].isspace() else "") + " ".join(value.split())
    if text != value:
        logger.warning("EditRequest.%s %r normalized to %r (whitespace runs would be target tokens)",
                       field, value, text)
    return text


@dataclass(frozen=True)
class EditRequest:
    """A fact rewrite: ``prompt.format(subject)`` should be completed by ``target_new``.

    Args:
        prompt: a template with exactly one ``{}`` where the subject goes, e.g.
            ``"The mother tongue of {} is"``. The prompt ends where the object would begin.
        subject: the subject the fact is about, e.g. ``"Danielle Darrieux"``.
        target_new: the new object, with its leading space, e.g. ``" English"``.
        target_true: the object the model knows now (optional; used for reporting).

    In both targets each run of whitespace becomes one space and trailing whitespace is dropped
    (with a warning), so that no whitespace token becomes part of the target.
    """

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None

    def __post_init__(self) -> None:
        _text("prompt", self.prompt)
        n = self.prompt.count("{}")
        if n != 1:
            raise RequestError(
                f"EditRequest.prompt must contain exactly one '{{}}' for the subject; "
                f"found {n} in {self.prompt!r}"
            )
        _text("subject", self.subject)
        _text("target_new", self.target_new)
        _text("target_true", self.target_true, allow_none=True)
        for field in ("target_new", "target_true"):
            object.__setattr__(self, field, _normalized_target(field, getattr(self, field)))
        if self.target_true is not None and self.target_true.strip() == self.target_new.strip():
            raise RequestError(
                f"EditRequest.target_new equals target_true ({self.target_new!r}): nothing to edit"
            )

    @property
    def text(self) -> str:
        """The filled prompt."""
        return self.prompt.replace("{}", self.subject)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EditRequest":
        unknown = set(data) - {"prompt", "subject", "target_new", "target_true"}
        if unknown:
            raise RequestError(f"EditRequest got unknown fields {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_counterfact(cls, rewrite: Mapping[str, Any]) -> "EditRequest":
        """From CounterFact's ``requested_rewrite`` shape: targets are ``{"str": ...}`` objects,
        and a target without a leading space gets one (CounterFact stores bare words)."""
        def target(field: str) -> str | None:
            value = rewrite.get(field)
            if value is None:
                return None
            if isinstance(value, Mapping) and "str" not in value:
                raise RequestError(f'requested_rewrite.{field} must be a string or {{"str": ...}}; got {value!r}')
            text = value["str"] if isinstance(value, Mapping) else value
            return text if not isinstance(text, str) or text.startswith(" ") else " " + text

        for field in ("prompt", "subject", "target_new"):
            if field not in rewrite:
                raise RequestError(f"requested_rewrite is missing the field {field!r}")
        return cls(rewrite["prompt"], rewrite["subject"], target("target_new"), target("target_true"))

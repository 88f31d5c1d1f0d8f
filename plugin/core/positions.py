"""Token positions of a request: the subject span, the last subject token, the last relation token.

Positions come from tokenizing the prefix, prefix + subject and the whole prompt — never from
searching token strings — so BOS, GPT-2's leading-space BPE and sentencepiece's "▁" all agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from toplens.model import ModelAdapter
from toplens.core.requests import RequestError


class PromptTooLongError(RequestError):
    """A prompt an edit would run is longer than the model's context (``cfg.n_ctx``)."""


@dataclass(frozen=True)
class PromptPositions:
    """Token ids of a filled prompt and the positions that matter for editing.

    Attributes:
        tokens: token ids of the filled prompt (with BOS where the model uses one).
        subject_start: first token of the subject.
        last_subject: last token of the subject (where ROME/TOP read the key and add the value).
        last_relation: the last prompt token, which predicts the first target token.
    """

    tokens: tuple[int, ...]
    subject_start: int
    last_subject: int
    last_relation: int

    @property
    def subject_span(self) -> range:
        return range(self.subject_start, self.last_subject + 1)

    @property
    def relation_span(self) -> range:
        """Tokens after the subject (the relation words), up to the last prompt token."""
        return range(self.last_subject + 1, self.last_relation + 1)


def _is_prefix(short: list[int], long: list[int]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def locate(adapter: ModelAdapter, template: str, subject: str) -> PromptPositions:
    """Positions of ``subject`` inside ``template.format(subject)`` (template has one ``{}``)."""
    prefix = template[: template.index("{}")]
    filled = template.replace("{}", subject)
    full = adapter.tokenize(filled)
    # The space before the subject belongs to the subject's first token (Ġ / ▁ conventions).
    before = adapter.tokenize(prefix.rstrip())
    through = adapter.tokenize(prefix + subject)
    # A subject must add tokens of its own, and prefix+subject must tokenize as the start of
    # the prompt; otherwise the subject's tokens are merged with their neighbours.
    if len(through) <= len(before) or not _is_prefix(through, full):
        raise RequestError(
            f"EditRequest.subject {subject!r} is not found in the tokenized prompt {filled!r}: its "
            "tokens merge with the text around it"
        )
    start = min(_common_prefix(before, through), len(through) - 1)
    return PromptPositions(tuple(full), start, len(through) - 1, len(full) - 1)


def target_ids(adapter: ModelAdapter, prompt_text: str, target: str, field: str = "target_new") -> list[int]:
    """The ids of ``target`` as they follow ``prompt_text``: tok(prompt + target) minus tok(prompt)."""
    prompt = adapter.tokenize(prompt_text)
    both = adapter.tokenize(prompt_text + target)
    if not _is_prefix(prompt, both) or len(both) == len(prompt):
        raise RequestError(
            f"EditRequest.{field} {target!r} does not tokenize as a continuation of {prompt_text!r}"
        )
    return both[len(prompt):]


def _shortened(text: str, keep: int = 60) -> str:
    return repr(text if len(text) <= 2 * keep else f"{text[:keep]} ... {text[-keep:]}")


def check_fits(adapter: ModelAdapter, texts: Sequence[str], what: str, extra: int = 0) -> None:
    """Refuse ``texts`` when the longest, tokenized, plus ``extra`` tokens, is longer than the
    model's context ``cfg.n_ctx``. ``what`` names the prompts, with ``{}`` for the index of one."""
    lengths = [len(adapter.tokenize(text)) + extra for text in texts]
    if not lengths:
        return
    i = max(range(len(lengths)), key=lengths.__getitem__)
    n_ctx = int(adapter.cfg.n_ctx)
    if lengths[i] > n_ctx:
        raise PromptTooLongError(
            f"{what.format(i)} is {lengths[i]} tokens, more than the model's context of {n_ctx} tokens "
            f"(cfg.n_ctx): {_shortened(texts[i])}"
        )

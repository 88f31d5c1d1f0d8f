"""Where in a prompt TOP reads the relation feature h_r (the paper's open question 2).

The published rule reads it at the last prompt token, which predicts the object. Some prompts'
last token carries little of the relation: a trailing "Answer:", a question mark, a chat
template's closing tokens. h_r must come after the subject, since stage 2 reaches it from the
subject's last token and a causal model reads only backwards. So the other strategies choose
among the tokens after the subject:

- ``"last_content"``: the last of them that is a word and not a function word (" play" in
  "Q: Which instrument does {} play? A:"); the last token when there is none;
- ``"after_subject"``: the first of them, the earliest token that has read the subject and every
  relation word before it ("?" in "Q: What is the capital of {}? A:");
- ``"all"``: every one of them (δ₁ is added at each, h*_r is matched at each);
- ``"max_ie"``: the token whose clean state at la, restored into a run with the subject corrupted,
  recovers most of the answer (:mod:`toplens.core.relation_ie`); measured once per request on the
  bare prompt and passed here as its distance from the last token (``from_end``).

Either way the target is still predicted at the last token, which reads the chosen one through
attention.
"""

from __future__ import annotations

from typing import Literal

from toplens.core.positions import PromptPositions
from toplens.model import ModelAdapter

RelationPosition = Literal["last", "last_content", "after_subject", "all", "max_ie"]
RELATION_POSITIONS: tuple[str, ...] = ("last", "last_content", "after_subject", "all", "max_ie")
#: the strategies read off a measurement of the request rather than off its tokens
MEASURED: tuple[str, ...] = ("max_ie",)
#: the strategies with more than one position per prompt
SEVERAL: tuple[str, ...] = ("all",)

#: English function words that carry no relation: articles, pronouns, prepositions, auxiliaries,
#: question words and the answer cues of question prompts
FUNCTION_WORDS = frozenset("""
a an the this that these those it its he she they his her their who whom whose which what where when why how
of in on at to for from by with as into onto about over under through than and or but nor so if then
is are was were be been being am do does did has have had will would can could shall should may might must
q a answer question called named known
""".split())


def token_strategy(strategy: str) -> str:
    """``strategy`` where it reads one position off the tokens, else "last" (where a measurement
    that needs one h_r position, such as the automatic la, starts from)."""
    return "last" if strategy in MEASURED + SEVERAL else strategy


def is_content(text: str) -> bool:
    """Whether a token's text is a word (holds a letter) that is not a function word."""
    word = text.strip().lower()
    return any(c.isalpha() for c in word) and word.strip(".,:;?!'\"()") not in FUNCTION_WORDS


def relation_position(adapter: ModelAdapter, pos: PromptPositions, strategy: str, from_end: int | None = None) -> int:
    """The position of h_r in the prompt ``pos`` locates, by ``strategy`` (see the module): always
    after the subject, the last token where a strategy finds nothing. ``"max_ie"`` takes the
    measured distance ``from_end`` from the last token (clipped to the tokens after the subject)."""
    if strategy not in RELATION_POSITIONS:
        raise ValueError(f"relation_position must be one of {list(RELATION_POSITIONS)}; got {strategy!r}")
    if strategy in MEASURED and (isinstance(from_end, bool) or not isinstance(from_end, int) or from_end < 0):
        raise ValueError(f"relation_position={strategy!r} needs the measured from_end (an int >= 0); got {from_end!r}")
    after = pos.relation_span  # last_subject + 1 .. last_relation
    if strategy in ("last", "all") or not after:  # "all": its last site (relation_sites has them all)
        return pos.last_relation
    if strategy == "max_ie":
        return max(after[0], pos.last_relation - from_end)
    if strategy == "after_subject":
        return after[0]
    special = set(getattr(adapter.tokenizer, "all_special_ids", ()))  # padding, unknown pieces
    for i in reversed(after):
        if pos.tokens[i] not in special and is_content(adapter.decode(pos.tokens[i])):
            return i
    return pos.last_relation


def relation_sites(adapter: ModelAdapter, pos: PromptPositions, strategy: str, from_end: int | None = None) -> list[int]:
    """Every position where h_r is read by ``strategy``: each token after the subject for "all", else
    the one :func:`relation_position` gives."""
    if strategy == "all" and pos.relation_span:
        return list(pos.relation_span)
    return [relation_position(adapter, pos, strategy, from_end)]

"""Where in a prompt TOP reads the relation feature h_r (the paper's open question 2).

The published rule reads it at the last prompt token, which predicts the object. Some prompts'
last token carries little of the relation: a question ending in "?", a trailing "Answer:", a chat
template's closing tokens. ``"last_content"`` reads h_r instead at the last token of the prompt
outside the subject that is a word and not a function word ("capital" in "Q: What is the capital
of {}? A:"); where the prompt has none it is the last token. Either way the target is still
predicted at the last token, which reaches the chosen position through attention.
"""

from __future__ import annotations

from typing import Literal

from toplens.core.positions import PromptPositions
from toplens.model import ModelAdapter

RelationPosition = Literal["last", "last_content"]
RELATION_POSITIONS: tuple[str, ...] = ("last", "last_content")

#: English function words that carry no relation: articles, pronouns, prepositions, auxiliaries,
#: question words and the answer cues of question prompts
FUNCTION_WORDS = frozenset("""
a an the this that these those it its he she they his her their who whom whose which what where when why how
of in on at to for from by with as into onto about over under through than and or but nor so if then
is are was were be been being am do does did has have had will would can could shall should may might must
q a answer question called named known
""".split())


def is_content(text: str) -> bool:
    """Whether a token's text is a word (holds a letter) that is not a function word."""
    word = text.strip().lower()
    return any(c.isalpha() for c in word) and word.strip(".,:;?!'\"()") not in FUNCTION_WORDS


def relation_position(adapter: ModelAdapter, pos: PromptPositions, strategy: str) -> int:
    """The position of h_r in the prompt ``pos`` locates: its last token (``"last"``), or its last
    content token outside the subject (``"last_content"``; the last token where there is none)."""
    if strategy not in RELATION_POSITIONS:
        raise ValueError(f"relation_position must be one of {list(RELATION_POSITIONS)}; got {strategy!r}")
    if strategy == "last":
        return pos.last_relation
    first = 1 if adapter.prepend_bos else 0
    special = set(getattr(adapter.tokenizer, "all_special_ids", ()))  # BOS, padding, unknown
    for i in range(pos.last_relation, first - 1, -1):
        token = pos.tokens[i]
        if i not in pos.subject_span and token not in special and is_content(adapter.decode(token)):
            return i
    return pos.last_relation

"""Context templates: the prompt plus prefixes the model itself writes, as in ROME.

``"{}"`` stands for the rewriting prompt; each other template is ``"<generated text>. {}"``.
Generated from the start token with seeded top-k sampling, once per model, and cached on disk.
A template may instead hold :data:`SUBJECT_SLOT`, the subject alone (a row in another word order);
:func:`fill` makes either kind a row.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from toplens.core.cache import cache_dir, key_digest, read_json, write_json
from toplens.model import ModelAdapter, as_adapter
from toplens.model.identity import active_hooks, tokenizer_digest, weights_digest

logger = logging.getLogger(__name__)

DEFAULT_LENGTHS: tuple[tuple[int, int], ...] = ((10, 5), (10, 10))
#: where a template puts the subject itself rather than the whole prompt
SUBJECT_SLOT = "{subject}"
_MEMORY: dict[str, tuple[str, ...]] = {}


def _clean(text: str) -> str:
    return " ".join(text.replace("{", " ").replace("}", " ").split())


def generate_templates(
    adapter: ModelAdapter, lengths: tuple[tuple[int, int], ...], top_k: int, seed: int
) -> tuple[str, ...]:
    """Sample ``count`` prefixes of ``n_tokens`` tokens for each (count, n_tokens) pair."""
    templates = ["{}"]
    for group, (count, n_tokens) in enumerate(lengths):
        rows = adapter.sample([[adapter.bos_token_id]] * count, n_tokens, top_k, seed + group)
        for row in rows:
            text = adapter.tokenizer.decode(row[1:], skip_special_tokens=True)
            templates.append(_clean(text) + ". {}")
    return tuple(templates)


def relation_prefixed(templates: Sequence[str], prompt: str, on: bool = True) -> tuple[str, ...]:
    """``templates`` and, when ``on``, one more whose prefix is the prompt's own relation words:
    "is located in the continent of: {}" for "{} is located in the continent of". In that row the
    subject follows words of its relation, as in a paraphrase that names the relation first. It is
    built from the rewriting prompt alone, never from relation templates or evaluation prompts.
    The row is for word order, not grammar: "The capital of {} is" gives "The capital of is: {}"."""
    words = _clean(prompt.replace("{}", " ")).rstrip(" .:?")
    return (*templates, f"{words}: {{}}") if on and words else tuple(templates)


def fill(template: str, prompt: str) -> str:
    """The rewriting row of ``template`` for ``prompt`` (still with "{}" for the subject): the prompt in
    place of "{}", or, in a template with :data:`SUBJECT_SLOT`, the template with "{}" there."""
    return template.replace(SUBJECT_SLOT, "{}") if SUBJECT_SLOT in template else template.replace("{}", prompt)


def relation_reordered(templates: Sequence[str], prompt: str, on: bool = True) -> tuple[str, ...]:
    """``templates`` with, when ``on`` and ``prompt`` starts with its subject, a row in the other word
    order right after the bare prompt: the relation's words, then the subject and "is" (for
    "{} is located in the continent of", "is located in the continent of: {subject} is"). The
    answer is then read right after the subject with the relation before it, as in a paraphrase
    that names the relation first. Built from the rewriting prompt alone, never from relation
    templates or evaluation prompts."""
    words = _clean(prompt.replace("{}", " ")).rstrip(" .:?")
    if not (on and words and prompt.lstrip().startswith("{}")) or reordered_rows(templates):
        return tuple(templates)
    return (templates[0], f"{words}: {SUBJECT_SLOT} is", *templates[1:])


def reordered_rows(templates: Sequence[str]) -> int:
    """How many rows name the subject alone, right after the bare prompt (the rows stage 2 fits
    beside it); such a row anywhere else is refused."""
    run = next((i for i, t in enumerate(templates[1:]) if SUBJECT_SLOT not in t), len(templates) - 1)
    if any(SUBJECT_SLOT in t for t in (templates[:1] + tuple(templates[1 + run:]))):
        raise ValueError(f"templates: a row with {SUBJECT_SLOT} must follow the bare prompt; got {tuple(templates)!r}")
    return run


def context_templates(
    model,
    lengths: tuple[tuple[int, int], ...] = DEFAULT_LENGTHS,
    *,
    top_k: int = 5,
    seed: int = 0,
    use_cache: bool = True,
) -> tuple[str, ...]:
    """ROME's context templates for this model: ``("{}", "<prefix>. {}", ...)``.

    Cached by a hash of every weight except the W_out matrices that edits change, so an edited
    model keeps the templates of the model it was edited from (ROME draws them once), while a
    model that differs anywhere else draws its own. With hooks active on the model they are drawn
    under those hooks and not cached.

    Args:
        model: a TransformerLens model or adapter.
        lengths: (how many, tokens each) groups of generated prefixes.
        top_k: sampling breadth; seed: the RNG seed.
    """
    adapter = as_adapter(model)
    _check_lengths(lengths)
    if use_cache and active_hooks(adapter.model):
        logger.warning("hooks are active on the model: drawing context templates under them, uncached")
        use_cache = False
    if not use_cache:
        return generate_templates(adapter, lengths, top_k, seed)
    key = {"what": "context_templates", "model": weights_digest(adapter, skip_w_out_from=0),
           "tokenizer": tokenizer_digest(adapter), "lengths": [list(x) for x in lengths], "top_k": top_k, "seed": seed}
    digest = key_digest(key)
    if digest not in _MEMORY:
        _MEMORY[digest] = _cached(adapter, key, cache_dir() / f"templates-{digest}.json", top_k, seed)
    return _MEMORY[digest]


def _cached(adapter: ModelAdapter, key: dict, path: Path, top_k: int, seed: int) -> tuple[str, ...]:
    """The templates stored at ``path`` when valid, else newly drawn and stored there."""
    stored = read_json(path, key) if path.exists() else None
    templates = stored.get("templates") if stored else None
    if templates is not None and _valid(templates, key["lengths"]):
        return tuple(templates)
    if stored is not None:
        logger.warning("cache file %s holds malformed templates; recomputing it", path)
    templates = generate_templates(adapter, tuple(map(tuple, key["lengths"])), top_k, seed)
    write_json(path, {"key": key, "templates": list(templates)})
    return templates


def _valid(templates, lengths) -> bool:
    return (isinstance(templates, list) and len(templates) == 1 + sum(n for n, _ in lengths)
            and all(isinstance(t, str) and t.count("{}") == 1 for t in templates))


def _check_lengths(lengths) -> None:
    ok = isinstance(lengths, (tuple, list)) and all(
        isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                                              for n in x) for x in lengths)
    if not ok:
        raise ValueError(f"context_lengths must be (count, tokens) pairs of positive ints; got {lengths!r}")

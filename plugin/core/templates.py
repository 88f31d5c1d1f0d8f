"""Context templates: the prompt plus prefixes the model itself writes, as in ROME.

``"{}"`` stands for the rewriting prompt; each other template is ``"<generated text>. {}"``.
Generated from the start token with seeded top-k sampling, once per model, and cached on disk.
"""

from __future__ import annotations

import json
import logging

from toplens.core.cache import cache_dir, key_digest
from toplens.model import ModelAdapter, as_adapter

logger = logging.getLogger(__name__)

DEFAULT_LENGTHS: tuple[tuple[int, int], ...] = ((10, 5), (10, 10))
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


def context_templates(
    model,
    lengths: tuple[tuple[int, int], ...] = DEFAULT_LENGTHS,
    *,
    top_k: int = 5,
    seed: int = 0,
    use_cache: bool = True,
) -> tuple[str, ...]:
    """ROME's context templates for this model: ``("{}", "<prefix>. {}", ...)``.

    Args:
        model: a TransformerLens model or adapter.
        lengths: (how many, tokens each) groups of generated prefixes.
        top_k: sampling breadth; seed: the RNG seed.
    """
    adapter = as_adapter(model)
    key = {"what": "context_templates", "model": adapter.fingerprint(below_layer=0), "lengths": [list(x) for x in lengths],
           "top_k": top_k, "seed": seed}
    digest = key_digest(key)
    if use_cache and digest in _MEMORY:
        return _MEMORY[digest]
    path = cache_dir() / f"templates-{digest}.json"
    if use_cache and path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            _MEMORY[digest] = tuple(stored["templates"])
            return _MEMORY[digest]
        logger.warning("ignoring %s: its stored key does not match", path)
    templates = generate_templates(adapter, lengths, top_k, seed)
    if use_cache:
        path.write_text(json.dumps({"key": key, "templates": list(templates)}, indent=1))
        _MEMORY[digest] = templates
    return templates

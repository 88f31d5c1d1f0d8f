"""Second-moment statistics C = E[k kᵀ] of MLP keys (the inputs of W_out) at one layer.

Streamed over a corpus in batches, accumulated in float64, cached on disk keyed by the model's
fingerprint, the layer and the corpus' fingerprint. The default corpus is seeded text sampled
from the model itself (no data set is needed offline); any iterable of strings can be passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Iterable

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from toplens.core.cache import cache_dir, key_digest
from toplens.model import ModelAdapter, as_adapter, hook_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampledCorpus:
    """The default corpus: ``n_texts`` texts of ``n_tokens`` tokens sampled from the model."""

    n_texts: int = 96
    n_tokens: int = 64
    top_k: int = 40
    seed: int = 1234


def sample_corpus(model, spec: SampledCorpus = SampledCorpus(), batch_size: int = 32) -> list[str]:
    """Seeded model-written texts, started from the BOS token."""
    adapter = as_adapter(model)
    texts: list[str] = []
    for start in range(0, spec.n_texts, batch_size):
        count = min(batch_size, spec.n_texts - start)
        rows = adapter.sample([[adapter.bos_token_id]] * count, spec.n_tokens, spec.top_k, spec.seed + start)
        texts += [adapter.tokenizer.decode(r[1:], skip_special_tokens=True) for r in rows]
    return texts


def corpus_fingerprint(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:20]


def accumulate_second_moment(
    adapter: ModelAdapter, layer: int, texts: list[str], max_tokens: int = 128, batch_size: int = 16
) -> tuple[Float[Tensor, "d_mlp d_mlp"], int]:
    """Σ k kᵀ / n over every non-padding token of ``texts`` (float64), and n."""
    name = hook_name("key", layer)
    total = torch.zeros(adapter.d_mlp, adapter.d_mlp, dtype=torch.float64, device=adapter.device)
    count = 0
    batches = range(0, len(texts), batch_size)
    for start in tqdm(batches, desc=f"key statistics L{layer}", disable=len(batches) < 4, leave=False):
        seqs = [adapter.tokenize(t)[:max_tokens] or [adapter.bos_token_id] for t in texts[start:start + batch_size]]
        tokens = adapter.to_batch(seqs)
        mask = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
        for row, seq in enumerate(seqs):
            mask[row, : len(seq)] = True
        with torch.no_grad():
            keys = adapter.capture(tokens, [name], stop_layer=layer + 1)[0][mask].to(torch.float64)
        total += keys.T @ keys
        count += keys.shape[0]
    return total / max(count, 1), count


def key_second_moment(
    model,
    layer: int,
    corpus: Iterable[str] | None = None,
    *,
    sampled: SampledCorpus = SampledCorpus(),
    max_tokens: int = 128,
    use_cache: bool = True,
) -> Float[Tensor, "d_mlp d_mlp"]:
    """C = E[k kᵀ] of the keys at ``layer`` over ``corpus`` (default: model-sampled text).

    Returned in the model's dtype on its device; cached on disk unless ``use_cache=False``.
    """
    adapter = as_adapter(model)
    adapter.check_layer(layer)
    texts = list(corpus) if corpus is not None else None
    source = {"sampled": asdict(sampled)} if texts is None else {"texts": corpus_fingerprint(texts)}
    key = {"what": "key_second_moment", "model": adapter.fingerprint(below_layer=layer), "layer": layer,
           "corpus": source, "max_tokens": max_tokens}
    path = cache_dir() / f"mom2-{key_digest(key)}.safetensors"
    if use_cache and path.exists():
        cached = _read(path, key)
        if cached is not None:
            return cached.to(adapter.device, adapter.dtype)
    if texts is None:
        texts = sample_corpus(adapter, sampled)
    moment, count = accumulate_second_moment(adapter, layer, texts, max_tokens)
    logger.info("key second moment at layer %d from %d tokens", layer, count)
    if use_cache:
        save_file({"moment": moment.float().cpu().contiguous()}, str(path),
                  metadata={"key": json.dumps(key, sort_keys=True), "tokens": str(count)})
    return moment.to(adapter.device, adapter.dtype)


def fold_covariance(
    model, layer: int, mom2_adjustment: bool, given: Tensor | None = None
) -> Float[Tensor, "d_mlp d_mlp"] | None:
    """C for a fold or solve at ``layer``: ``given`` when set, else the (cached) corpus statistic
    when ``mom2_adjustment``, else None, which stands for the identity."""
    if given is not None:
        return given
    return key_second_moment(model, layer) if mom2_adjustment else None


def _read(path, key) -> Tensor | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        stored = (handle.metadata() or {}).get("key")
    if stored != json.dumps(key, sort_keys=True):
        logger.warning("ignoring %s: its stored key does not match", path)
        return None
    return load_file(str(path))["moment"]

"""Second-moment statistics C = E[k kᵀ] of MLP keys (the inputs of W_out) at one layer.

Streamed over a corpus in batches, accumulated in float64, cached on disk keyed by a hash of the
weights the keys depend on, the layer and the corpus' fingerprint. The default corpus is seeded text sampled
from the model itself (no data set is needed offline); any iterable of strings can be passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from dataclasses import asdict, dataclass
from typing import Iterable

import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from toplens.core.cache import cache_dir, key_digest, write_atomic
from toplens.model import ModelAdapter, as_adapter, hook_name
from toplens.model.identity import active_hooks, tokenizer_digest, weights_digest

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

    Returned in the model's dtype on its device. Cached on disk unless ``use_cache=False``, keyed
    by a hash of every weight the keys at ``layer`` can depend on (all but W_out of ``layer`` and
    above), the tokenizer, the corpus and the settings. The default corpus is keyed by the weights
    that drew it apart from the W_out matrices, so an edited model keeps the statistic of the
    model it was edited from (as a fixed corpus would give). With hooks active on the model it is
    computed under them and not cached.
    """
    adapter = as_adapter(model)
    adapter.check_layer(layer)
    texts = list(corpus) if corpus is not None else None
    if texts is not None and not any(t.strip() for t in texts):
        raise ValueError("corpus has no text: key statistics need at least one non-empty string")
    if use_cache and active_hooks(adapter.model):
        logger.warning("hooks are active on the model: computing the layer-%d key statistics under them, uncached",
                       layer)
        use_cache = False
    key = _key(adapter, layer, texts, sampled, max_tokens) if use_cache else None
    path = cache_dir() / f"mom2-{key_digest(key)}.safetensors" if key else None
    cached = _read(path, key, adapter.d_mlp) if path is not None and path.exists() else None
    if cached is not None:
        return cached.to(adapter.device, adapter.dtype)
    texts = _sampled(adapter, sampled, key) if texts is None else texts
    moment, count = accumulate_second_moment(adapter, layer, texts, max_tokens)
    logger.info("key second moment at layer %d from %d tokens", layer, count)
    if path is not None:
        meta = {"key": json.dumps(key, sort_keys=True), "tokens": str(count)}
        write_atomic(path, lambda tmp: save_file({"moment": moment.float().cpu().contiguous()}, tmp, metadata=meta))
    return moment.to(adapter.device, adapter.dtype)


def _sampled(adapter: ModelAdapter, spec: SampledCorpus, key: dict | None) -> list[str]:
    """The default corpus, drawn once per drawing model and spec while the process lives (so that
    the statistics of several layers share one sample); uncached when ``key`` is None (hooks active)."""
    if key is None:
        return sample_corpus(adapter, spec)
    memo = (key["corpus"]["by"], key["tokenizer"], spec)
    if memo not in _SAMPLES:
        if len(_SAMPLES) >= 2:
            _SAMPLES.pop(next(iter(_SAMPLES)))
        _SAMPLES[memo] = sample_corpus(adapter, spec)
    return _SAMPLES[memo]


_SAMPLES: dict[tuple[str, str, SampledCorpus], list[str]] = {}  # (drawing weights, tokenizer, spec) -> texts


def _key(adapter: ModelAdapter, layer: int, texts: list[str] | None, sampled: SampledCorpus,
         max_tokens: int) -> dict:
    # the default corpus is drawn by the model: by its weights apart from the W_out that edits change
    source = ({"sampled": asdict(sampled), "by": weights_digest(adapter, skip_w_out_from=0)} if texts is None
              else {"texts": corpus_fingerprint(texts)})
    return {"what": "key_second_moment", "model": weights_digest(adapter, skip_w_out_from=layer), "layer": layer,
            "tokenizer": tokenizer_digest(adapter), "corpus": source, "max_tokens": max_tokens}


def fold_covariance(
    model, layer: int, mom2_adjustment: bool, given: Tensor | None = None
) -> Float[Tensor, "d_mlp d_mlp"] | None:
    """C for a fold or solve at ``layer``: ``given`` when set, else the (cached) corpus statistic
    when ``mom2_adjustment``, else None, which stands for the identity."""
    if given is not None:
        return given
    return key_second_moment(model, layer) if mom2_adjustment else None


def _read(path: Path, key: dict, d_mlp: int) -> Tensor | None:
    """The stored moment when the file is readable, under ``key`` and a finite [d_mlp, d_mlp]
    matrix; else None, with a warning naming the file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = (handle.metadata() or {}).get("key")
            matches = stored == json.dumps(key, sort_keys=True)
            moment = handle.get_tensor("moment").clone() if matches else None  # not backed by the file
    except Exception as err:  # safetensors raises its own error types for a damaged file
        logger.warning("cache file %s is unreadable (%s); recomputing it", path, err)
        return None
    if moment is None:
        logger.warning("cache file %s was stored under another key; recomputing it", path)
    elif tuple(moment.shape) != (d_mlp, d_mlp) or not bool(torch.isfinite(moment).all()):
        logger.warning("cache file %s holds a malformed moment %s; recomputing it", path, tuple(moment.shape))
        moment = None
    return moment

"""Runs against a key/value cache: the later positions of a batch alone, reading the earlier
positions' keys and values from a cache (HookedTransformer's ``past_kv_cache``).

``PrefixCacheRuns`` is the part of :class:`toplens.model.ModelAdapter` that needs that cache;
TransformerBridge has no such path, and these methods say so with ``NotImplementedError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor


@dataclass(frozen=True)
class PrefixCache:
    """Keys and values of the first ``length`` positions of a batch, one (keys, values) pair per
    block, each [batch, length, kv_heads, d_head] (see :meth:`ModelAdapter.prefix_cache`)."""

    entries: tuple[tuple[Tensor, Tensor], ...]

    @property
    def batch(self) -> int:
        return int(self.entries[0][0].shape[0])

    @property
    def length(self) -> int:
        return int(self.entries[0][0].shape[1])

    def narrow(self, length: int, repeats: int = 1) -> "PrefixCache":
        """The first ``length`` positions, with the rows repeated ``repeats`` times (row-major)."""
        return PrefixCache(tuple(self.block(layer, length, repeats) for layer in range(len(self.entries))))

    def block(self, layer: int, length: int, repeats: int = 1) -> tuple[Tensor, Tensor]:
        """Block ``layer``'s keys and values of the first ``length`` positions, rows repeated."""
        if not 0 <= length <= self.length:
            raise ValueError(f"length must be in [0, {self.length}]; got {length!r}")
        keys, values = self.entries[layer]
        return keys[:, :length].repeat(repeats, 1, 1, 1), values[:, :length].repeat(repeats, 1, 1, 1)


def _kv_cache_class():
    try:
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
        return TransformerLensKeyValueCache
    except ImportError:  # TransformerLens releases before the cache module was renamed
        from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache
        return HookedTransformerKeyValueCache


class PrefixCacheRuns:
    """Key/value-cache runs of a :class:`~toplens.model.ModelAdapter` (mixed into it)."""

    @property
    def supports_prefix_cache(self) -> bool:
        """Whether a forward can run the later positions alone against cached keys and values of
        the earlier ones (HookedTransformer's ``past_kv_cache``; TransformerBridge has no such path)."""
        return self.backend == "hooked"

    @torch.no_grad()
    def prefix_cache(self, tokens: Int[Tensor, "batch pos"]) -> PrefixCache:
        """The keys and values every block computes for ``tokens``, under the active hooks."""
        if not self.supports_prefix_cache:
            raise NotImplementedError(f"the {self.backend!r} backend has no key/value cache path")
        cache = _kv_cache_class().init_cache(self.cfg, self.device, tokens.shape[0])
        self.model(tokens, past_kv_cache=cache)
        return PrefixCache(tuple((e.past_keys, e.past_values) for e in cache.entries))

    def final_resid_after(
        self,
        prefix: PrefixCache,
        start_layer: int,
        start_resid: Float[Tensor, "batch suffix d_model"],
        stop_layer: int | None = None,
    ) -> Float[Tensor, "batch suffix d_model"]:
        """Like :meth:`final_resid`, for the positions after ``prefix`` only: ``start_resid`` holds
        their residual entering ``start_layer`` and attention reads the earlier positions' keys and
        values from ``prefix`` (which must hold one row per batch row). Hooks see the suffix only."""
        if not self.supports_prefix_cache:
            raise NotImplementedError(f"the {self.backend!r} backend has no key/value cache path")
        if prefix.batch != start_resid.shape[0]:
            raise ValueError(f"prefix holds {prefix.batch} rows; start_resid has {start_resid.shape[0]}")
        stop = self.n_layers if stop_layer is None else stop_layer
        cache = self._frozen_cache(prefix.batch, prefix.length, dict(enumerate(prefix.entries)))
        return self.model(start_resid, start_at_layer=start_layer, stop_at_layer=stop, past_kv_cache=cache)

    def block_after(
        self,
        layer: int,
        keys: Float[Tensor, "batch prefix kv_heads d_head"],
        values: Float[Tensor, "batch prefix kv_heads d_head"],
        resid: Float[Tensor, "batch suffix d_model"],
    ) -> Float[Tensor, "batch suffix d_model"]:
        """Block ``layer`` alone on the positions after a prefix: ``resid`` enters it and attention
        reads the prefix's ``keys`` and ``values`` of that block (see :meth:`PrefixCache.block`).
        Running the blocks one at a time lets a caller add rows to the batch between them."""
        if not self.supports_prefix_cache:
            raise NotImplementedError(f"the {self.backend!r} backend has no key/value cache path")
        if keys.shape[0] != resid.shape[0]:
            raise ValueError(f"keys hold {keys.shape[0]} rows; resid has {resid.shape[0]}")
        cache = self._frozen_cache(resid.shape[0], keys.shape[1], {self.check_layer(layer): (keys, values)})
        return self.model(resid, start_at_layer=layer, stop_at_layer=layer + 1, past_kv_cache=cache)

    def _frozen_cache(self, batch: int, length: int, entries: dict[int, tuple[Tensor, Tensor]]):
        """A read-only HookedTransformer key/value cache holding ``entries`` (block -> keys, values)."""
        cache = _kv_cache_class().init_cache(self.cfg, self.device, batch)
        for layer, (keys, values) in entries.items():
            cache.entries[layer].past_keys, cache.entries[layer].past_values = keys, values
        cache.previous_attention_mask = torch.ones(batch, length, dtype=torch.int, device=self.device)
        cache.freeze()
        return cache

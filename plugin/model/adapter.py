"""The model boundary: one adapter over HookedTransformer and TransformerBridge.

Every editor and analysis talks to the model through TransformerLens hook names, which both
backends share, and through the few methods below. Whatever differs between the backends —
where W_out lives, whether ``start_at_layer`` exists — is decided here and nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from toplens.model.names import Hook, hook_name
from toplens.model.prefix_cache import PrefixCacheRuns

logger = logging.getLogger(__name__)


def _bridge_class():
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # pragma: no cover - TL without the bridge
        return None
    return TransformerBridge


def _hooked_class():
    try:
        from transformer_lens import HookedTransformer
    except ImportError:  # TL 4.x removed it
        return None
    return HookedTransformer


class ModelAdapter(PrefixCacheRuns):
    """A thin, stateless view of a TransformerLens model that editors and analyses share.

    Args:
        model: a ``HookedTransformer`` or a ``TransformerBridge``.
        prepend_bos: whether token sequences start with the BOS token. Default: the model's own
            TransformerLens convention, ``cfg.default_prepend_bos``.
    """

    def __init__(self, model, prepend_bos: bool | None = None):
        bridge, hooked = _bridge_class(), _hooked_class()
        if bridge is not None and isinstance(model, bridge):
            self.backend: Literal["hooked", "bridge"] = "bridge"
        elif hooked is not None and isinstance(model, hooked):
            self.backend = "hooked"
        else:
            raise TypeError(
                f"model must be a HookedTransformer or a TransformerBridge; got {type(model).__name__}"
            )
        if model.tokenizer is None:
            raise ValueError("model.tokenizer is None: toplens needs the model's tokenizer")
        self.model = model
        self._prepend_bos = prepend_bos

    # ----------------------------------------------------------------- shape and identity
    @property
    def cfg(self):
        return self.model.cfg

    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.cfg.d_model)

    @property
    def d_mlp(self) -> int:
        return int(self.cfg.d_mlp)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.w_out(0).dtype

    @property
    def name(self) -> str:
        return str(getattr(self.cfg, "model_name", None) or "model")

    def has_mlp(self) -> bool:
        return not bool(getattr(self.cfg, "attn_only", False)) and bool(getattr(self.cfg, "d_mlp", None))

    def require_mlp(self) -> None:
        """Raise a clear error for a model that has no MLP to edit (``cfg.attn_only``)."""
        if not self.has_mlp():
            raise ValueError(
                f"model has no MLP (cfg.attn_only={getattr(self.cfg, 'attn_only', None)!r}, "
                f"cfg.d_mlp={getattr(self.cfg, 'd_mlp', None)!r}): locate-then-edit methods "
                "write into the MLP output matrix W_out"
            )

    def check_layer(self, layer: int, field: str = "layer") -> int:
        """Validate an edit layer index against [0, n_layers)."""
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"{field} must be an int; got {layer!r}")
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"{field}={layer} is outside [0, {self.n_layers}) for this model")
        return layer

    def fingerprint(self, below_layer: int | None = None) -> str:
        """A hash of every weight, bit for bit, except W_out of ``below_layer`` and above (see
        :func:`toplens.model.identity.weights_digest`)."""
        from toplens.model.identity import weights_digest

        return weights_digest(self, skip_w_out_from=below_layer)

    # ----------------------------------------------------------------------- weights
    def w_out(self, layer: int) -> Float[Tensor, "d_mlp d_model"]:
        """W_out of a layer as a writable [d_mlp, d_model] tensor (a view on the bridge)."""
        weight = self.model.blocks[layer].mlp.W_out
        if tuple(weight.shape) != (self.d_mlp, self.d_model):
            raise RuntimeError(f"unexpected W_out shape {tuple(weight.shape)} at layer {layer}")
        return weight

    def mlp_output(self, layer: int, keys: Float[Tensor, "... d_mlp"]) -> Float[Tensor, "... d_model"]:
        """The MLP output for given keys: keys · W_out (+ b_out where the model has one).

        On HookedTransformer the product uses W_out in TransformerLens' own (contiguous) layout,
        whichever layout the loader left it in (the bundled model's is the checkpoint's, a
        transposed view): a product of few rows takes a different kernel, and other bits, on a view.
        """
        weight = self.w_out(layer).detach()
        out = keys @ (weight.contiguous() if self.backend == "hooked" else weight)
        bias = getattr(self.model.blocks[layer].mlp, "b_out", None)
        return out if bias is None else out + bias.detach()

    def embedding_matrix(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.model.W_E

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Turn off gradients for every parameter (restored on exit): only deltas are optimized."""
        params = list(self.model.parameters())
        flags = [p.requires_grad for p in params]
        try:
            for p in params:
                p.requires_grad_(False)
            yield
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)

    # -------------------------------------------------------------------- tokenization
    @property
    def prepend_bos(self) -> bool:
        """Whether sequences start with BOS: the model's TransformerLens convention
        (``cfg.default_prepend_bos``, what ``model.to_tokens`` does) unless overridden."""
        if self._prepend_bos is not None:
            return self._prepend_bos
        return bool(getattr(self.cfg, "default_prepend_bos", True))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a text, with BOS exactly when the model's convention has one."""
        ids = list(self.tokenizer(text, add_special_tokens=False).input_ids)
        if self.prepend_bos:
            ids = [self.bos_token_id] + ids
        return ids

    @property
    def bos_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else self.bos_token_id)

    def to_batch(self, sequences: Sequence[Sequence[int]]) -> Int[Tensor, "batch pos"]:
        """Right-pad token sequences into one batch. Causal attention leaves real positions exact."""
        width = max(len(s) for s in sequences)
        batch = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        for row, seq in enumerate(sequences):
            batch[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        return batch.to(self.device)

    def decode(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)])

    # ------------------------------------------------------------------------ running
    def hooks(self, fwd_hooks: Sequence[Hook] = (), bwd_hooks: Sequence[Hook] = ()):
        """The model's own ``hooks()`` context: hooks compose with any the user has active."""
        return self.model.hooks(fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks))

    def resid_before(self, tokens: Int[Tensor, "batch pos"], layer: int) -> Float[Tensor, "batch pos d_model"]:
        """The residual stream entering block ``layer``, without gradient."""
        with torch.no_grad():
            if self.backend == "hooked":
                return self.model(tokens, stop_at_layer=layer)
            return self.capture(tokens, [hook_name("resid_pre", layer)], stop_layer=layer + 1)[0]

    def capture(
        self, tokens: Int[Tensor, "batch pos"], names: Sequence[str], stop_layer: int | None = None
    ) -> list[Tensor]:
        """Activations at hook ``names`` for one forward pass (stopping early where possible)."""
        store: dict[str, Tensor] = {}

        def keeper(name: str):
            def keep(act, hook):
                store[name] = act
            return keep

        with self.model.hooks(fwd_hooks=[(n, keeper(n)) for n in names]):
            self.model(tokens, stop_at_layer=stop_layer)
        return [store[n] for n in names]

    def final_resid(
        self,
        tokens: Int[Tensor, "batch pos"],
        start_layer: int = 0,
        start_resid: Float[Tensor, "batch pos d_model"] | None = None,
        stop_layer: int | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """Run the blocks from ``start_layer`` (given the residual entering it) up to ``stop_layer``
        (exclusive; default all) and return the residual stream there, under the active hooks.

        HookedTransformer starts at ``start_layer`` and skips the earlier blocks. TransformerBridge
        has no ``start_at_layer``, so there the prefix is recomputed from ``tokens``; with every
        parameter frozen it costs one gradient-free forward of the earlier blocks.
        """
        stop = self.n_layers if stop_layer is None else stop_layer
        if self.backend == "hooked":
            if start_layer > 0 and start_resid is not None:
                return self.model(start_resid, start_at_layer=start_layer, stop_at_layer=stop)
            return self.model(tokens, stop_at_layer=stop)
        return self._bridge_resid(tokens, stop)

    def _bridge_resid(self, tokens, stop: int) -> Tensor:
        name = hook_name("resid_post", stop - 1)
        return self.capture(tokens, [name], stop_layer=stop if stop < self.n_layers else None)[0]

    def unembed(self, resid: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_vocab"]:
        """Final norm and unembedding of residuals after the last block, in the weights' precision even
        under autocast (no half-precision copy of the vocabulary matrix is kept for backward)."""
        with torch.autocast(resid.device.type, enabled=False):
            normed = self.model.ln_final(resid.to(self.dtype).unsqueeze(0)).squeeze(0)
            if self.backend == "hooked" and not getattr(self.cfg, "output_logits_soft_cap", -1.0) > 0:
                return F.linear(normed, self.model.W_U.T, self.model.b_U)  # Unembed's product, never its copy
            return self.model.unembed(normed.unsqueeze(0)).squeeze(0)

    def logits_at(
        self,
        tokens: Int[Tensor, "batch pos"],
        rows: Int[Tensor, " n"],
        cols: Int[Tensor, " n"],
        start_layer: int = 0,
        start_resid: Float[Tensor, "batch pos d_model"] | None = None,
    ) -> Float[Tensor, "n d_vocab"]:
        """Next-token logits at chosen (row, position) pairs only, under the active hooks.

        The unembedding (the vocabulary is often the largest matrix) runs only where needed.
        """
        resid = self.final_resid(tokens, start_layer, start_resid)
        return self.unembed(resid[rows, cols])

    def logits(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.model(tokens)

    @torch.no_grad()
    def next_token_probs(self, text: str) -> Float[Tensor, " d_vocab"]:
        """P(next token | text) at the last position of ``text``."""
        tokens = self.to_batch([self.tokenize(text)])
        return self.model(tokens)[0, -1].float().softmax(-1)

    def decoder(self, tokens: Int[Tensor, "batch pos"]) -> Callable[[Tensor | None], Float[Tensor, "batch d_vocab"]]:
        """A generation stepper under the active hooks: ``step(None)`` gives the last position's
        logits of ``tokens``, ``step(ids)`` appends one token per row and gives the new last
        logits. HookedTransformer keeps a key-value cache and unembeds the last position alone; the
        bridge runs the whole sequence."""
        if self.backend == "hooked":
            from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
            cache = TransformerLensKeyValueCache.init_cache(self.cfg, self.device, tokens.shape[0])
            return lambda ids: self.unembed(self.model(tokens if ids is None else ids[:, None], past_kv_cache=cache,
                                                       stop_at_layer=self.n_layers)[:, -1])
        seen = [tokens]

        def step(ids: Tensor | None) -> Tensor:
            if ids is not None:
                seen.append(ids[:, None])
            return self.model(torch.cat(seen, 1))[:, -1]
        return step

    @torch.no_grad()
    def sample(self, prompts: Sequence[Sequence[int]], n_tokens: int, top_k: int, seed: int) -> list[list[int]]:
        """Seeded top-k sampling of ``n_tokens`` new tokens after each (equal-length) prompt."""
        tokens = self.to_batch(prompts)
        with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
            torch.manual_seed(seed)
            out = self.model.generate(tokens, max_new_tokens=n_tokens, stop_at_eos=False, do_sample=True, top_k=top_k,
                                      use_past_kv_cache=True, verbose=False, return_type="tokens")
        return [row.tolist() for row in out]


def as_adapter(model_or_adapter) -> ModelAdapter:
    """Accept either a TransformerLens model or an adapter (what every public function takes)."""
    if isinstance(model_or_adapter, ModelAdapter):
        return model_or_adapter
    return ModelAdapter(model_or_adapter)

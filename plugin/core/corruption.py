"""The corrupted run of causal tracing: the seeded subject noise and the answer's probability.
It lives in core because an editor uses it too (TOP's ``rel_feat_layer="auto"``,
:mod:`toplens.core.auto_la`), beside the analyses that trace with it.

Corrupt the subject: add seeded Gaussian noise to the subject's token embeddings (``hook_embed``),
std = ``noise_factor`` (3) × the std of the embedding rows of the subject tokens. Every traced
quantity is P(answer's first token) at the last prompt position, averaged over the noise samples
(one row of a batch per sample). :mod:`toplens.analyses.tracing.grid` restores clean activations into
this run; :mod:`toplens.analyses.tracing.causal_trace` turns the result into indirect effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from toplens.core.interventions import Hook, add_noise, patch_from
from toplens.core.positions import PromptPositions, locate, target_ids
from toplens.model import ModelAdapter, as_adapter, hook_name

TraceKind = Literal["resid", "mlp", "attn"]
KINDS: tuple[str, ...] = ("resid", "mlp", "attn")
# The hook each kind restores (a kind is what a cell restores: residual, MLP or attention output).
HOOK_KINDS = {"resid": "resid_post", "mlp": "value", "attn": "attn_out"}
DEFAULT_WINDOW = 10
DEFAULT_SAMPLES = 10
NOISE_FACTOR = 3.0
MAX_ROWS = 256


def check_kind(kind: str) -> str:
    if kind not in HOOK_KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}; got {kind!r}")
    return kind


def window_layers(layer: int, n_layers: int, kind: str, window: int) -> range:
    """The layers restored for the cell at ``layer``: itself for "resid"; for "mlp" / "attn" the
    ``window`` layers around it, clipped to the model (ROME: [l − w//2, l + ⌈w/2⌉))."""
    if check_kind(kind) == "resid":
        return range(layer, layer + 1)
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


# ----------------------------------------------------------------------- the corruption
@dataclass(frozen=True)
class Corruption:
    """Everything fixed for tracing one prompt: tokens, positions, the answer and the noise.

    Attributes:
        tokens: the filled prompt, one row.
        positions: subject span and last relation token of the prompt.
        answer: the answer string; answer_id: its first token (the one whose P is traced).
        noise: one sample per row, zero outside the subject tokens.
        noise_std: the std the noise was drawn with.
        seed: the noise seed.
    """

    tokens: Int[Tensor, "1 pos"]
    positions: PromptPositions
    answer: str
    answer_id: int
    noise: Float[Tensor, "sample pos d_model"]
    noise_std: float
    seed: int

    @property
    def n_samples(self) -> int:
        return int(self.noise.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def last(self) -> int:
        return self.n_positions - 1


def embedding_std(adapter: ModelAdapter, token_ids: Sequence[int]) -> float:
    """The std of the embedding matrix rows of ``token_ids`` (all entries pooled), as ROME's
    ``collect_embedding_std`` computes it over the subjects' tokens."""
    if not token_ids:
        raise ValueError("embedding_std needs at least one token id; got none")
    ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=adapter.device)
    return float(adapter.embedding_matrix()[ids].detach().float().std())


def subject_token_ids(adapter: ModelAdapter, prompt: str, subject: str) -> list[int]:
    """The token ids of the subject as it appears in the filled prompt."""
    pos = locate(adapter, prompt, subject)
    return [pos.tokens[i] for i in pos.subject_span]


def make_corruption(
    model, prompt: str, subject: str, answer: str, *, n_samples: int = DEFAULT_SAMPLES,
    noise_std: float | None = None, noise_factor: float = NOISE_FACTOR, seed: int = 0,
) -> Corruption:
    """Tokenize ``prompt.format(subject)``, find the subject and draw the seeded subject noise.

    ``noise_std`` overrides the default std, ``noise_factor`` × :func:`embedding_std` of the
    subject's tokens (pass a dataset-level value to trace many prompts with one noise level).
    """
    adapter = as_adapter(model)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int; got {n_samples!r}")
    pos = locate(adapter, prompt, subject)
    filled = prompt.replace("{}", subject)
    answer_id = target_ids(adapter, filled, answer, field="answer")[0]
    if noise_std is None:
        noise_std = noise_factor * embedding_std(adapter, [pos.tokens[i] for i in pos.subject_span])
    if not noise_std > 0:
        raise ValueError(f"noise_std must be positive; got {noise_std!r}")
    generator = torch.Generator().manual_seed(seed)
    draw = torch.randn(n_samples, len(pos.subject_span), adapter.d_model, generator=generator)
    noise = torch.zeros(n_samples, len(pos.tokens), adapter.d_model)
    noise[:, pos.subject_span.start: pos.subject_span.stop] = draw * noise_std
    tokens = adapter.to_batch([pos.tokens])
    return Corruption(tokens, pos, answer, answer_id, noise.to(adapter.device, adapter.dtype), float(noise_std), seed)


# -------------------------------------------------------------------------- running
def noise_hook(corruption: Corruption, repeats: int) -> Hook:
    """Add the subject noise to ``repeats`` copies of every sample (row = copy · n_samples + sample)."""
    c = corruption
    subject = torch.zeros(repeats * c.n_samples, c.n_positions, dtype=torch.bool)
    subject[:, c.positions.subject_span.start: c.positions.subject_span.stop] = True
    return add_noise(hook_name("embed"), c.noise.repeat(repeats, 1, 1), subject)


def answer_probs(
    adapter: ModelAdapter, corruption: Corruption, patches: Sequence[Hook] = (), repeats: int = 1,
    start_layer: int = 0, start_resid: Float[Tensor, "sample pos d_model"] | None = None,
) -> Float[Tensor, " row"]:
    """P(answer) at the last position of ``repeats`` copies of every noise sample (row =
    copy · n_samples + sample), corrupted, under the extra ``patches`` hooks.

    With ``start_resid`` (the corrupted residual entering ``start_layer``, one per sample) the
    blocks below ``start_layer`` are skipped where the backend can (they are the same for every
    cell restored at or above it); elsewhere they are recomputed from the noised tokens.
    """
    c = corruption
    n_rows = repeats * c.n_samples
    tokens = c.tokens.expand(n_rows, -1)
    resid = None if start_resid is None else start_resid.repeat(repeats, 1, 1)
    rows = torch.arange(n_rows, device=tokens.device)
    cols = torch.full((n_rows,), c.last, device=tokens.device)
    with torch.no_grad(), adapter.hooks([noise_hook(c, repeats), *patches]):
        logits = adapter.logits_at(tokens, rows, cols, start_layer, resid)
    return logits.float().softmax(-1)[:, c.answer_id]


@torch.no_grad()
def restored_probs(adapter: ModelAdapter, corruption: Corruption,
                   sites: Sequence[tuple[int, int]]) -> Float[Tensor, " site"]:
    """P(answer) with the subject corrupted and, for each (layer, position) of ``sites``, the clean
    residual after that block restored at that one position (one copy of the noise samples per
    site, one forward), averaged over the samples."""
    if not sites:
        raise ValueError("sites: give at least one (layer, position) to restore; got none")
    c, layers = corruption, sorted({layer for layer, _ in sites})
    names = {layer: hook_name("resid_post", layer) for layer in layers}
    clean = dict(zip(layers, adapter.capture(c.tokens, [names[layer] for layer in layers], stop_layer=layers[-1] + 1)))
    n, rows = c.n_samples, len(sites) * c.n_samples
    patches = []
    for layer in layers:
        mask = torch.zeros(rows, c.n_positions, dtype=torch.bool)
        for i, (at_layer, at) in enumerate(sites):
            mask[i * n:(i + 1) * n, at] = at_layer == layer
        patches.append(patch_from(names[layer], clean[layer].detach().expand(rows, -1, -1), mask))
    return answer_probs(adapter, c, patches, repeats=len(sites)).view(len(sites), n).mean(-1)


@torch.no_grad()
def clean_prob(adapter: ModelAdapter, corruption: Corruption) -> float:
    """P(answer) on the clean prompt."""
    c = corruption
    device = c.tokens.device
    logits = adapter.logits_at(c.tokens, torch.zeros(1, dtype=torch.long, device=device),
                               torch.tensor([c.last], device=device))
    return float(logits.float().softmax(-1)[0, c.answer_id])


def corrupted_prob(adapter: ModelAdapter, corruption: Corruption) -> float:
    """P(answer | corrupted), averaged over the noise samples."""
    return float(answer_probs(adapter, corruption).mean())


@torch.no_grad()
def clean_states(adapter: ModelAdapter, corruption: Corruption, kind: str) -> Float[Tensor, "layer pos d_model"]:
    """The clean activation of ``kind`` at every layer and position (one clean forward)."""
    names = [hook_name(HOOK_KINDS[check_kind(kind)], layer) for layer in range(adapter.n_layers)]
    states = adapter.capture(corruption.tokens, names)
    return torch.stack([s[0].detach() for s in states])

"""Causal tracing (Meng et al., 2022), as the paper uses it to locate where a fact is recalled.

Corrupt the subject: add seeded Gaussian noise to the subject's token embeddings (``hook_embed``),
std = ``noise_factor`` (3) × the std of the embedding rows of the subject tokens. Then restore
one clean activation m_{l,i} — the residual after block l (``"resid"``), or the MLP output
(``"mlp"``) or attention output (``"attn"``) of a window of layers around l, as ROME's tracing
does — at one token position i, and measure

    IE(o, θ, m_{l,i}) = P(o | corrupted, m_{l,i} restored) − P(o | corrupted),

averaged over the noise samples; P is the probability of the answer's first token at the last
prompt position. The restorations are batched: every (layer, position) cell × noise sample is one
row of a batch, and one mask-based patch hook per layer restores the cells whose window holds
that layer, so the grid takes a few forwards rather than one per cell. On HookedTransformer the
cells of one position p run together on positions p.. only, against the corrupted keys and
values of the earlier positions (a restoration cannot change what came before it), one block at
a time: a cell's rows join the batch at the block where its residual first differs from the
corrupted one (the restored residual or MLP output is written straight into it), so no row runs
a block whose result is already cached. The bridge, which has no key/value cache path, runs
masked forwards over every position from the lowest restored layer of each batch. Cells before
the subject, which the noise cannot reach, are 0 without a forward. :func:`trace_cell` is the
plain one-cell-at-a-time reference (ROME's way) the tests and the benchmark compare against.

The model is used as it is: trace an edited model by applying the edit first
(``with apply_edit(model, edit): causal_trace(...)``) and asking for o*.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from toplens.core.interventions import Hook, add_noise, capture, patch_from, set_vectors
from toplens.model import ModelAdapter, PrefixCache, as_adapter, hook_name
from toplens.core.positions import PromptPositions, locate, target_ids

from toplens.analyses.maps import LayerPositionMap, position_roles

logger = logging.getLogger(__name__)

TraceKind = Literal["resid", "mlp", "attn"]
KINDS: tuple[str, ...] = ("resid", "mlp", "attn")
_HOOK_KINDS = {"resid": "resid_post", "mlp": "value", "attn": "attn_out"}
DEFAULT_WINDOW = 10
DEFAULT_SAMPLES = 10
NOISE_FACTOR = 3.0
MAX_ROWS = 256


def check_kind(kind: str) -> str:
    if kind not in _HOOK_KINDS:
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
def _noise_hook(corruption: Corruption, repeats: int) -> Hook:
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
    with torch.no_grad(), adapter.hooks([_noise_hook(c, repeats), *patches]):
        logits = adapter.logits_at(tokens, rows, cols, start_layer, resid)
    return logits.float().softmax(-1)[:, c.answer_id]


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
    names = [hook_name(_HOOK_KINDS[check_kind(kind)], layer) for layer in range(adapter.n_layers)]
    states = adapter.capture(corruption.tokens, names)
    return torch.stack([s[0].detach() for s in states])


# --------------------------------------------------------------------- batched grid
@dataclass(frozen=True)
class GridInputs:
    """What every cell of one trace shares (see :func:`grid_inputs`): the clean activations of the
    restored kind; the corrupted residual entering each block (and leaving the last), the
    corrupted MLP outputs for "mlp" and, where the backend has a key/value cache, the corrupted
    keys and values of every position (``prefix``, one row per noise sample)."""

    kind: str
    window: int
    clean: Float[Tensor, "layer pos d_model"]
    corrupted: Float[Tensor, "layer_plus_1 sample pos d_model"]
    corrupted_sites: Float[Tensor, "layer sample pos d_model"] | None
    prefix: PrefixCache | None = None


@torch.no_grad()
def grid_inputs(adapter: ModelAdapter, corruption: Corruption, kind: str, window: int,
                use_prefix: bool = True) -> GridInputs:
    """One clean forward and one corrupted forward: the clean activations of ``kind``; per noise
    sample the corrupted residual entering every block and leaving the last, the corrupted MLP
    outputs (for "mlp", whose cells join after their first restored layer) and, where the backend
    has a key/value cache and ``use_prefix`` is set, the corrupted keys and values."""
    c, n = corruption, adapter.n_layers
    names = [hook_name("resid_pre", layer) for layer in range(n)] + [hook_name("resid_post", n - 1)]
    if kind == "mlp":
        names += [hook_name(_HOOK_KINDS[kind], layer) for layer in range(n)]
    store: dict[str, Tensor] = {}
    tokens = c.tokens.expand(c.n_samples, -1)
    prefix = None
    with adapter.hooks([_noise_hook(c, 1), *(capture(name, store) for name in names)]):
        if use_prefix and adapter.supports_prefix_cache:
            prefix = adapter.prefix_cache(tokens)
        else:
            adapter.final_resid(tokens)
    states = [store[name] for name in names]
    sites = torch.stack(states[n + 1:]) if kind == "mlp" else None
    return GridInputs(kind, window, clean_states(adapter, c, kind), torch.stack(states[:n + 1]), sites, prefix)


def cell_masks(
    cells: Sequence[tuple[int, int]], n_samples: int, n_positions: int, n_layers: int, kind: str, window: int,
    skip_first: bool = False,
) -> dict[int, Bool[Tensor, "row pos"]]:
    """Per restored layer, which (row, position) entries take the clean activation: the rows of
    cell j are ``[j·n_samples, (j+1)·n_samples)``; a cell restores its position in its window
    (without the window's first layer if ``skip_first``)."""
    masks: dict[int, Tensor] = {}
    for j, (layer, position) in enumerate(cells):
        for restored in window_layers(layer, n_layers, kind, window)[int(skip_first):]:
            mask = masks.setdefault(restored, torch.zeros(len(cells) * n_samples, n_positions, dtype=torch.bool))
            mask[j * n_samples:(j + 1) * n_samples, position] = True
    return masks


def restored_probs(
    adapter: ModelAdapter, corruption: Corruption, inputs: GridInputs, cells: Sequence[tuple[int, int]],
) -> Float[Tensor, " cell"]:
    """Mean P(answer | corrupted, cell restored) of every cell, batched. With ``inputs.prefix``
    and cells at one position, :func:`suffix_answer_probs` runs them; otherwise one masked
    forward over every position starts at the lowest restored layer of the cells."""
    c = corruption
    if inputs.prefix is not None and len({position for _, position in cells}) == 1:
        return suffix_answer_probs(adapter, c, inputs, cells).view(len(cells), c.n_samples).mean(1)
    masks = cell_masks(cells, c.n_samples, c.n_positions, adapter.n_layers, inputs.kind, inputs.window)
    start = min(masks)
    patches = [patch_from(hook_name(_HOOK_KINDS[inputs.kind], layer), inputs.clean[layer][None], mask)
               for layer, mask in sorted(masks.items())]
    probs = answer_probs(adapter, c, patches, len(cells), start, inputs.corrupted[start])
    return probs.view(len(cells), c.n_samples).mean(1)


def entry_layer(kind: str, layer: int, n_layers: int, window: int) -> int:
    """The block a cell's rows join the suffix run at. A restored residual (``resid``) or MLP output
    (``mlp``) at the window's first layer s is written into the residual leaving block s, so the
    rows join at s + 1; a restored attention output changes block s's MLP, so they join at s."""
    start = window_layers(layer, n_layers, kind, window).start
    return start if kind == "attn" else start + 1


def entry_resid(inputs: GridInputs, layer: int, position: int, n_layers: int) -> Float[Tensor, "sample suffix d_model"]:
    """The residual a cell's rows carry into :func:`entry_layer`, over the positions from its own:
    the corrupted one, with the cell's first restoration already applied where it joins late."""
    kind = inputs.kind
    start = window_layers(layer, n_layers, kind, inputs.window).start
    if kind == "attn":
        return inputs.corrupted[start][:, position:]
    resid = inputs.corrupted[start + 1][:, position:].clone()
    if kind == "resid":  # the clean residual leaving block `start` replaces the corrupted one
        resid[:, 0] = inputs.clean[start][position]
    else:  # the clean MLP output replaces the corrupted one inside the residual
        resid[:, 0] += inputs.clean[start][position] - inputs.corrupted_sites[start][:, position]
    return resid


@torch.no_grad()
def suffix_answer_probs(
    adapter: ModelAdapter, corruption: Corruption, inputs: GridInputs, cells: Sequence[tuple[int, int]],
) -> Float[Tensor, " row"]:
    """P(answer) per row (cell-major, then noise sample) for cells at one position p, running only
    positions p.. block by block against the corrupted keys and values of the earlier positions
    (a restoration at p cannot change them). Each cell's rows join the batch at its
    :func:`entry_layer`, so no row runs a block whose output is still the corrupted one."""
    c, n = corruption, adapter.n_layers
    first = cells[0][1]
    joins = [entry_layer(inputs.kind, layer, n, inputs.window) for layer, _ in cells]
    if joins != sorted(joins):
        raise ValueError(f"cells must come in order of the layer they join at; got {list(cells)}")
    masks = cell_masks(cells, c.n_samples, c.n_positions, n, inputs.kind, inputs.window,
                       skip_first=inputs.kind != "attn")
    patches = [patch_from(hook_name(_HOOK_KINDS[inputs.kind], layer), inputs.clean[layer][None, first:],
                          mask[:, first:], leading_rows=True) for layer, mask in sorted(masks.items())]
    resid = inputs.corrupted[0][:0, first:]
    with adapter.hooks(patches):
        for block in range(joins[0], n + 1):
            joining = [entry_resid(inputs, layer, first, n) for (layer, _), at in zip(cells, joins) if at == block]
            resid = torch.cat([resid, *joining]) if joining else resid
            if block < n and len(resid):
                keys, values = inputs.prefix.block(block, first, repeats=len(resid) // c.n_samples)
                resid = adapter.block_after(block, keys, values, resid)
    return adapter.unembed(resid[:, -1]).float().softmax(-1)[:, corruption.answer_id]


def trace_cell(
    adapter: ModelAdapter, corruption: Corruption, clean: Tensor, kind: str, window: int, layer: int, position: int,
) -> float:
    """Reference path: mean P(answer | corrupted, one cell restored), one full forward for one cell,
    with index-based patches (no masks, no skipped blocks) — what the batched grid must reproduce."""
    c = corruption
    rows, cols = list(range(c.n_samples)), [position] * c.n_samples
    patches = [set_vectors(hook_name(_HOOK_KINDS[kind], restored), clean[restored][position][None], rows, cols)
               for restored in window_layers(layer, adapter.n_layers, kind, window)]
    return float(answer_probs(adapter, c, patches).mean())


def _check_indices(values: Sequence[int], bound: int, field: str) -> list[int]:
    out = list(values)
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < bound:
            raise ValueError(f"{field} must hold ints in [0, {bound}); got {v!r}")
    return out


def indirect_effects(
    model, corruption: Corruption, kind: TraceKind = "resid", *, layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None, window: int = DEFAULT_WINDOW, batched: bool = True,
    max_rows: int = MAX_ROWS, progress: bool = False, base_prob: float | None = None, use_prefix: bool = True,
) -> Float[Tensor, "layer pos"]:
    """IE of restoring each (layer, position) cell: P(o | corrupted, restored) − P(o | corrupted).

    ``layers`` / ``positions`` (default all) choose the grid; ``batched=False`` runs the
    one-cell-at-a-time reference. Batched forwards hold at most ``max_rows`` rows (cells ×
    samples; at least one cell) and skip the blocks below their lowest restored layer; cells
    before the subject are 0 without a forward (the noise cannot reach them: their corrupted
    states are the clean ones). Where the backend has a key/value cache (HookedTransformer) and
    ``use_prefix`` is true, the cells of each position run only the positions from theirs on,
    block by block, each cell's rows joining at its :func:`entry_layer`
    (:func:`suffix_answer_probs`). ``base_prob`` is P(o | corrupted) if already known.
    """
    adapter = as_adapter(model)
    check_kind(kind)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int; got {window!r}")
    layers = _check_indices(range(adapter.n_layers) if layers is None else layers, adapter.n_layers, "layers")
    positions = _check_indices(range(corruption.n_positions) if positions is None else positions,
                               corruption.n_positions, "positions")
    base = corrupted_prob(adapter, corruption) if base_prob is None else base_prob
    cells = [(layer, position) for layer in layers for position in positions]
    if batched:
        probs = _batched_probs(adapter, corruption, kind, window, cells, max_rows, progress, base, use_prefix)
    else:
        probs = _reference_probs(adapter, corruption, kind, window, cells, progress)
    return (probs - base).view(len(layers), len(positions))


def _reference_probs(adapter, corruption, kind, window, cells, progress) -> Tensor:
    clean = clean_states(adapter, corruption, kind)
    bar = tqdm(cells, desc=f"trace {kind} (cell by cell)", disable=not progress, leave=False)
    return torch.tensor([trace_cell(adapter, corruption, clean, kind, window, l, p) for l, p in bar])


def position_chunks(
    cells: Sequence[tuple[int, int]], todo: Sequence[int], per_chunk: int, joins: Sequence[int],
) -> list[list[int]]:
    """The cells ``todo`` grouped by position, ordered by the layer they join at (``joins[j]``
    for cell j) and cut into runs of at most ``per_chunk`` cells."""
    groups: dict[int, list[int]] = {}
    for j in sorted(todo, key=lambda j: (cells[j][1], joins[j], cells[j][0])):
        groups.setdefault(cells[j][1], []).append(j)
    return [group[i:i + per_chunk] for group in groups.values() for i in range(0, len(group), per_chunk)]


def _batched_probs(adapter, corruption, kind, window, cells, max_rows, progress, base: float,
                   use_prefix: bool = True) -> Tensor:
    inputs = grid_inputs(adapter, corruption, kind, window, use_prefix)
    probs = torch.full((len(cells),), base, dtype=torch.float32)
    todo = [j for j, (_, position) in enumerate(cells) if position >= corruption.positions.subject_start]
    per_chunk = max(1, max_rows // corruption.n_samples)
    if inputs.prefix is None:
        chunks = [todo[i:i + per_chunk] for i in range(0, len(todo), per_chunk)]
    else:
        joins = [entry_layer(kind, layer, adapter.n_layers, window) for layer, _ in cells]
        chunks = position_chunks(cells, todo, per_chunk, joins)
    for chunk in tqdm(chunks, desc=f"trace {kind}", disable=not progress, leave=False):
        probs[chunk] = restored_probs(adapter, corruption, inputs, [cells[j] for j in chunk]).cpu()
    return probs


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class TraceResult:
    """A causal trace of one prompt.

    Attributes:
        effects: IE per (layer, position), with the prompt's tokens and roles.
        kind: "resid", "mlp" or "attn"; window: layers restored together (mlp / attn).
        answer, answer_id: the traced answer and its first token.
        clean_prob, corrupted_prob: P(answer) clean and corrupted (mean over samples).
        noise_std, n_samples, seed: the corruption.
    """

    effects: LayerPositionMap
    kind: str
    window: int
    answer: str
    answer_id: int
    clean_prob: float
    corrupted_prob: float
    noise_std: float
    n_samples: int
    seed: int

    def peak(self) -> dict[str, Any]:
        """The cell of the largest IE: layer, position, token, role and the IE."""
        values = self.effects.values
        flat = int(values.argmax())
        layer, position = divmod(flat, values.shape[1])
        return {"layer": layer, "position": position, "token": self.effects.tokens[position],
                "role": self.effects.roles[position], "ie": float(values[layer, position])}

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: the IE grid (layer-major), tokens, roles and the run's settings."""
        return {"kind": self.kind, "window": self.window, "answer": self.answer, "answer_id": self.answer_id,
                "clean_prob": self.clean_prob, "corrupted_prob": self.corrupted_prob,
                "noise_std": self.noise_std, "n_samples": self.n_samples, "seed": self.seed,
                "tokens": list(self.effects.tokens), "roles": list(self.effects.roles),
                "indirect_effect": self.effects.values.tolist(), "peak": self.peak()}


def token_labels(adapter: ModelAdapter, positions: PromptPositions) -> tuple[list[str], list[str]]:
    """The decoded token and the role of every prompt position."""
    tokens = [adapter.decode(t) for t in positions.tokens]
    roles = position_roles(len(tokens), positions.subject_span, positions.last_relation)
    return tokens, roles


def causal_trace(
    model, prompt: str, subject: str, answer: str, *, kind: TraceKind = "resid", n_samples: int = DEFAULT_SAMPLES,
    window: int = DEFAULT_WINDOW, noise_std: float | None = None, noise_factor: float = NOISE_FACTOR,
    seed: int = 0, batched: bool = True, max_rows: int = MAX_ROWS, progress: bool = False,
) -> TraceResult:
    """Causal trace of ``prompt.format(subject)`` → ``answer`` over every layer and position.

    Args:
        model: a TransformerLens model or adapter, edited or not (hooks the user has active stay).
        prompt: a template with one ``{}`` for the subject; subject: the corrupted subject.
        answer: o (or o* on an edited model), with its leading space; its first token is traced.
        kind: "resid" (residual after block l), "mlp" or "attn" (outputs over ``window`` layers).
        n_samples: noise samples; noise_std / noise_factor / seed: the corruption (see
            :func:`make_corruption`); batched / max_rows / progress: see :func:`indirect_effects`.
    """
    adapter = as_adapter(model)
    check_kind(kind)
    corruption = make_corruption(adapter, prompt, subject, answer, n_samples=n_samples, noise_std=noise_std,
                                 noise_factor=noise_factor, seed=seed)
    base = corrupted_prob(adapter, corruption)
    values = indirect_effects(adapter, corruption, kind, window=window, batched=batched, max_rows=max_rows,
                              progress=progress, base_prob=base)
    tokens, roles = token_labels(adapter, corruption.positions)
    span = f"window {window}" if kind != "resid" else "one layer"
    title = f"IE on P({answer!r}) of restoring {kind} ({span})"
    effects = LayerPositionMap(values, tokens, roles, "indirect_effect", title)
    logger.debug("traced %s of %r -> %r: corrupted P %.4g", kind, corruption.positions.tokens, answer, base)
    return TraceResult(effects, kind, window, answer, corruption.answer_id, clean_prob(adapter, corruption), base,
                       corruption.noise_std, n_samples, seed)


def causal_traces(model, prompt: str, subject: str, answer: str, kinds: Sequence[str] = KINDS,
                  **options: Any) -> dict[str, TraceResult]:
    """:func:`causal_trace` for several kinds (the same noise, as the seed is shared)."""
    return {kind: causal_trace(model, prompt, subject, answer, kind=check_kind(kind), **options) for kind in kinds}

"""The batched causal-trace grid: every (layer, position) cell restored in a few forwards.

Every cell × noise sample is one row of a batch, and one mask-based patch hook per layer restores
the cells whose window holds that layer, so the grid takes a few forwards rather than one per cell.
On HookedTransformer the cells of one position p run together on positions p.. only, against the
corrupted keys and values of the earlier positions (a restoration cannot change what came before
it), one block at a time: a cell's rows join the batch at the block where its residual first
differs from the corrupted one (the restored residual or MLP output is written straight into it),
so no row runs a block whose result is already cached. The bridge, which has no key/value cache
path, runs masked forwards over every position from the lowest restored layer of each batch.
Cells before the subject, which the noise cannot reach, are not run (their IE is 0).
:func:`trace_cell` is the plain one-cell-at-a-time reference (ROME's way) the tests and the
benchmark compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from toplens.core.interventions import capture, patch_from, set_vectors
from toplens.model import ModelAdapter, PrefixCache, hook_name

from toplens.core.corruption import (HOOK_KINDS, Corruption, answer_probs, clean_states, noise_hook,
                                                 window_layers)

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
        names += [hook_name(HOOK_KINDS[kind], layer) for layer in range(n)]
    store: dict[str, Tensor] = {}
    tokens = c.tokens.expand(c.n_samples, -1)
    prefix = None
    with adapter.hooks([noise_hook(c, 1), *(capture(name, store) for name in names)]):
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
    patches = [patch_from(hook_name(HOOK_KINDS[inputs.kind], layer), inputs.clean[layer][None], mask)
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
    patches = [patch_from(hook_name(HOOK_KINDS[inputs.kind], layer), inputs.clean[layer][None, first:],
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
    patches = [set_vectors(hook_name(HOOK_KINDS[kind], restored), clean[restored][position][None], rows, cols)
               for restored in window_layers(layer, adapter.n_layers, kind, window)]
    return float(answer_probs(adapter, c, patches).mean())



def position_chunks(
    cells: Sequence[tuple[int, int]], todo: Sequence[int], per_chunk: int, joins: Sequence[int],
) -> list[list[int]]:
    """The cells ``todo`` grouped by position, ordered by the layer they join at (``joins[j]``
    for cell j) and cut into runs of at most ``per_chunk`` cells."""
    groups: dict[int, list[int]] = {}
    for j in sorted(todo, key=lambda j: (cells[j][1], joins[j], cells[j][0])):
        groups.setdefault(cells[j][1], []).append(j)
    return [group[i:i + per_chunk] for group in groups.values() for i in range(0, len(group), per_chunk)]


def batched_probs(adapter, corruption, kind, window, cells, max_rows, progress, base: float,
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



def reference_probs(adapter, corruption, kind, window, cells, progress) -> Tensor:
    clean = clean_states(adapter, corruption, kind)
    bar = tqdm(cells, desc=f"trace {kind} (cell by cell)", disable=not progress, leave=False)
    return torch.tensor([trace_cell(adapter, corruption, clean, kind, window, l, p) for l, p in bar])

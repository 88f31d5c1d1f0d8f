"""Causal-tracing latency on the bundled model: the full (layer × position) grid of one prompt,
batched (cells × noise samples as rows of a few forwards) against one cell at a time (one forward
per cell, the reference path), in the same process. Also checks that both give the same IEs.
Writes docs/bench_causal_trace.md and docs/bench_causal_trace.json.

    python bench/causal_trace.py [--kinds resid,mlp,attn] [--samples 10] [--backend auto]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from toplens.analyses.tracing.causal_trace import indirect_effects
from toplens.core.corruption import MAX_ROWS, corrupted_prob, make_corruption
from toplens import EditRequest, as_adapter, load_model

ROOT = Path(__file__).resolve().parents[1]
REQUEST = EditRequest("The mother tongue of {} is", "Danielle Darrieux", " English", " French")
TARGET_RATIO = 10.0


def time_grid(adapter, corruption, kind: str, window: int, batched: bool, max_rows: int,
              use_prefix: bool = True) -> tuple[float, torch.Tensor]:
    """Seconds for the whole IE grid of one kind (the corrupted baseline is shared, not timed)."""
    base = corrupted_prob(adapter, corruption)
    start = time.perf_counter()
    values = indirect_effects(adapter, corruption, kind, window=window, batched=batched, max_rows=max_rows,
                              base_prob=base, use_prefix=use_prefix)
    return time.perf_counter() - start, values


def run(model, kinds: list[str], samples: int, window: int, max_rows: int, request: EditRequest = REQUEST) -> dict:
    adapter = as_adapter(model)
    corruption = make_corruption(adapter, request.prompt, request.subject, request.target_true, n_samples=samples)
    rows = []
    for kind in kinds:
        batched_s, batched = time_grid(adapter, corruption, kind, window, True, max_rows)
        no_cache_s, no_cache = time_grid(adapter, corruption, kind, window, True, max_rows, use_prefix=False)
        cell_s, reference = time_grid(adapter, corruption, kind, window, False, max_rows)
        rows.append({"kind": kind, "cells": int(batched.numel()), "batched_seconds": batched_s,
                     "batched_without_prefix_cache_seconds": no_cache_s,
                     "cell_by_cell_seconds": cell_s, "ratio": cell_s / batched_s,
                     "ratio_without_prefix_cache": cell_s / no_cache_s,
                     "prefix_cache_used": adapter.supports_prefix_cache,
                     "max_abs_difference": float(max((batched - reference).abs().max(),
                                                     (no_cache - reference).abs().max()))})
    return {"model": adapter.name, "backend": adapter.backend, "n_layers": adapter.n_layers,
            "positions": corruption.n_positions, "samples": samples, "window": window, "max_rows": max_rows,
            "prompt": request.text, "answer": request.target_true, "results": rows}


def write_docs(report: dict, meta: dict, out_dir: Path) -> Path:
    lines = ["# Causal tracing: batched grid vs one cell at a time", "",
             f"Measured by `python bench/causal_trace.py` on {meta['machine']}, torch {meta['torch']}, "
             f"{meta['threads']} threads: {report['model']} ({report['backend']}), prompt "
             f"{report['prompt']!r} -> {report['answer']!r}, {report['n_layers']} layers x "
             f"{report['positions']} positions, {report['samples']} noise samples, window {report['window']}, "
             f"at most {report['max_rows']} rows per batched forward. Target ratio: >= {TARGET_RATIO:.0f}x.", "",
             "The batched grid skips the cells before the subject. Where the backend has a key/value cache "
             "(HookedTransformer), the cells of one position run together on the positions from theirs on, "
             "against the corrupted keys and values of the earlier positions, one block at a time; each "
             "cell's rows join the batch at the first block whose input its restoration changes. Without "
             "the cache (the middle column, and always on the bridge), masked forwards over every position "
             "start at the lowest restored layer of each batch. The difference column is the largest |IE| "
             "gap of either batched grid from the reference.", "",
             "| kind | cells | batched (s) | batched, no KV cache (s) | cell by cell (s) | ratio | ratio, no KV cache "
             "| max abs IE difference |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['kind']} | {r['cells']} | {r['batched_seconds']:.2f} | "
                     f"{r['batched_without_prefix_cache_seconds']:.2f} | {r['cell_by_cell_seconds']:.2f} | "
                     f"{r['ratio']:.1f}x | {r['ratio_without_prefix_cache']:.1f}x | {r['max_abs_difference']:.1e} |")
    lines += ["", f"Peak RSS: {meta['peak_rss_mb']:.0f} MB. Whole run: {meta['seconds']:.0f} s.", ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_causal_trace.md").write_text("\n".join(lines))
    (out_dir / "bench_causal_trace.json").write_text(json.dumps({"meta": meta, **report}, indent=1))
    return out_dir / "bench_causal_trace.md"


def main(argv=None, model=None) -> int:
    """``model`` replaces loading the bundled model (a quick check on a tiny one)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", default="resid,mlp,attn")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--max-rows", type=int, default=MAX_ROWS)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--out-dir", default=str(ROOT / "docs"))
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    model = model if model is not None else load_model(backend=args.backend)
    report = run(model, args.kinds.split(","), args.samples, args.window, args.max_rows)
    meta = {"machine": platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "seconds": time.perf_counter() - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(write_docs(report, meta, Path(args.out_dir)).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

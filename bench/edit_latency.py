"""Edit latency on the bundled model: seconds per edit, optimization steps, seconds per step, and
the ratio of seconds-per-step to one bare forward+backward pass over the same layers, measured
in the same run; peak RSS. Writes docs/benchmarks.md (a table) and docs/benchmarks.json.

    python bench/edit_latency.py [--methods rome,top,rets,memit] [--n 10] [--backends hooked,bridge]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from analyses.samples import known_fact_requests
from plugin import as_adapter, hook_name, load_model
from plugin.editors import get_editor
from plugin.objective import rewrite_batch
from plugin.presets import get_preset
from plugin.scoring import target_probability
from plugin.templates import context_templates

ROOT = Path(__file__).resolve().parents[1]
KNOWN = ROOT.parent / "shared" / "data" / "known_1000.json"


def bare_pass_seconds(adapter, request, hp, repeats: int = 3) -> float:
    """One forward+backward of the rewriting batch from the edit layer to the logits, no hooks of
    ours (on the bridge, which cannot start at a layer, the batch runs from the tokens with the
    residual entering the edit layer swapped in, as in an edit's own steps)."""
    layer = hp.layer if hasattr(hp, "layer") else hp.layers[0]
    batch = rewrite_batch(adapter, request, context_templates(adapter, hp.context_lengths), [hp.kl_prompt])
    prefix = adapter.resid_before(batch.tokens, layer)
    times = []
    with adapter.frozen():
        for _ in range(repeats):
            start_resid = prefix.clone().requires_grad_(True)
            swap = [(hook_name("resid_pre", layer), lambda act, hook: start_resid)] if adapter.backend == "bridge" else []
            t0 = time.perf_counter()
            with adapter.hooks(swap):
                logits = adapter.logits_at(batch.tokens, batch.target_rows, batch.target_cols, layer, start_resid)
            logits.float().log_softmax(-1).sum().backward()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_method(adapter, method: str, requests) -> dict:
    editor = get_editor(method)
    hp = get_preset(method, None, adapter.n_layers)
    rows = []
    for req in requests:
        t0 = time.perf_counter()
        edit = editor.compute(adapter, req, hp)
        seconds = time.perf_counter() - t0
        summary = edit.details.summary() if hasattr(edit.details, "summary") else {}
        steps = summary.get("steps", summary.get("stage1_steps", 0) + summary.get("stage2_steps", 0))
        from plugin import apply_edit
        with apply_edit(adapter.model, edit):
            ok = target_probability(adapter, req.text, req.target_new) > target_probability(adapter, req.text, req.target_true)
        rows.append({"subject": req.subject, "seconds": seconds, "steps": steps, "success": bool(ok)})
    bare = bare_pass_seconds(adapter, requests[0], hp)
    per_step = [r["seconds"] / max(r["steps"], 1) for r in rows]
    return {"method": method, "backend": adapter.backend, "hparams": hp.to_dict(), "edits": rows,
            "median_seconds_per_edit": statistics.median(r["seconds"] for r in rows),
            "median_steps": statistics.median(r["steps"] for r in rows),
            "median_seconds_per_step": statistics.median(per_step), "bare_pass_seconds": bare,
            "step_to_bare_ratio": statistics.median(per_step) / bare,
            "successes": sum(r["success"] for r in rows), "n": len(rows)}


def write_docs(results: list[dict], meta: dict) -> None:
    """Write the table; rows of (backend, method) pairs measured by an earlier run are kept."""
    path = ROOT / "docs" / "benchmarks.json"
    if path.exists():
        new = {(r["backend"], r["method"]) for r in results}
        earlier = [r for r in json.loads(path.read_text())["results"] if (r["backend"], r["method"]) not in new]
        results = earlier + results
    lines = ["# Edit latency on the bundled model", "",
             f"Measured by `python bench/edit_latency.py` on {meta['machine']}, torch {meta['torch']}, "
             f"{meta['threads']} threads, {meta['n']} facts from known_1000.json, the SmolLM2 presets "
             "(docs/presets.md). The bare pass is one forward+backward of the same rewriting batch from "
             "the edit layer to the logits, without hooks, timed in the same run.", "",
             "| backend | method | s/edit (median) | steps (median) | s/step | bare fwd+bwd (s) | step / bare | success |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['backend']} | {r['method']} | {r['median_seconds_per_edit']:.1f} | {r['median_steps']:.0f} | "
                     f"{r['median_seconds_per_step']:.2f} | {r['bare_pass_seconds']:.2f} | "
                     f"{r['step_to_bare_ratio']:.2f} | {r['successes']}/{r['n']} |")
    lines += ["", f"Peak RSS: {meta['peak_rss_mb']:.0f} MB. Whole run: {meta['seconds']:.0f} s.", ""]
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(lines))
    (ROOT / "docs" / "benchmarks.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="rome")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--backends", default="hooked,bridge")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    requests = known_fact_requests(KNOWN, args.n)
    results = []
    for backend in args.backends.split(","):
        adapter = as_adapter(load_model(backend=backend))
        context_templates(adapter, get_preset("rome", None).context_lengths)  # generated outside the timings
        results += [run_method(adapter, m, requests) for m in args.methods.split(",")]
    meta = {"machine": platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "n": len(requests), "seconds": time.perf_counter() - t0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    write_docs(results, meta)
    print((ROOT / "docs" / "benchmarks.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

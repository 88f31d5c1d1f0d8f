"""Edit latency on the bundled model: seconds per edit, optimization steps, seconds per step, and
the ratio of seconds-per-step to one bare forward+backward pass over the same layers, measured
in the same run; peak RSS. Writes docs/benchmarks.md (a table) and docs/benchmarks.json.

    python bench/edit_latency.py [--methods rome,top,rets,memit] [--n 10] [--backends hooked]
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

from toplens.analyses.evaluation.samples import known_fact_requests
from toplens import apply_edit, as_adapter, hook_name, load_model
from toplens.editors import get_editor
from toplens.core.objective import rewrite_batch
from toplens.editors.presets import get_preset
from toplens.core.scoring import target_probability
from toplens.core.templates import context_templates

ROOT = Path(__file__).resolve().parents[1]
KNOWN = ROOT.parent / "shared" / "data" / "known_1000.json"


def optimized_layer(editor, hp) -> int:
    """The first block an optimization step runs: the site of the editor's first stage (the edit
    layer for ROME and RETS, the last edit layer for MEMIT, la for TOP's stage 1)."""
    return editor.stages(hp)[0].site.layer


def bare_pass_seconds(adapter, editor, request, hp, repeats: int = 3) -> float:
    """One forward+backward of the rewriting batch from :func:`optimized_layer` to the logits, no hooks of
    ours (on the bridge, which cannot start at a layer, the batch runs from the tokens with the
    residual entering the edit layer swapped in, as in an edit's own steps)."""
    layer = optimized_layer(editor, hp)
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


class StepClock:
    """An observer that timestamps every optimization step; a step 0 starts a new stage
    (TOP's stage 1 then stage 2; one per request for MEMIT). A stage's final evaluation is not a step."""

    def __init__(self) -> None:
        self.stages: list[list[float]] = []

    def __call__(self, stage, event) -> None:
        if event.final:
            return
        if event.step == 0:
            self.stages.append([])
        self.stages[-1].append(time.perf_counter())

    def seconds_per_step(self, stage: int) -> list[float]:
        stamps = self.stages[stage] if stage < len(self.stages) else []
        return [b - a for a, b in zip(stamps, stamps[1:])]


def edit_once(adapter, editor, req, hp) -> dict:
    """One timed edit: seconds, steps, per-step seconds of its first and second stage, success."""
    clock = StepClock()
    t0 = time.perf_counter()
    edit = editor.compute(adapter, req, hp, observe=clock)
    seconds = time.perf_counter() - t0
    with apply_edit(adapter.model, edit):
        ok = target_probability(adapter, req.text, req.target_new) > target_probability(adapter, req.text, req.target_true)
    return {"subject": req.subject, "seconds": seconds, "steps": sum(len(t) for t in clock.stages),
            "stage_steps": [len(t) for t in clock.stages], "step_seconds_1": clock.seconds_per_step(0),
            "step_seconds_2": clock.seconds_per_step(1), "success": bool(ok)}


def run_method(adapter, method: str, requests) -> dict:
    editor = get_editor(method)
    hp = get_preset(method, None, adapter.n_layers)
    rows = [edit_once(adapter, editor, req, hp) for req in requests]
    bare = bare_pass_seconds(adapter, editor, requests[0], hp)
    stage1 = [x for r in rows for x in r["step_seconds_1"]]
    stage2 = [x for r in rows for x in r["step_seconds_2"]] if method == "top" else []
    per_step = statistics.median(stage1)
    return {"method": method, "backend": adapter.backend, "hparams": hp.to_dict(), "edits": rows,
            "median_seconds_per_edit": statistics.median(r["seconds"] for r in rows),
            "median_steps": statistics.median(r["steps"] for r in rows),
            "median_seconds_per_step": per_step, "bare_pass_seconds": bare,
            "step_to_bare_ratio": per_step / bare,
            "median_seconds_per_stage2_step": statistics.median(stage2) if stage2 else None,
            "successes": sum(r["success"] for r in rows), "n": len(rows)}


def write_docs(results: list[dict], meta: dict) -> None:
    """Write the table of this run (docs/benchmarks.md) and its JSON."""
    lines = ["# Edit latency on the bundled model", "",
             f"Measured by `python bench/edit_latency.py` on {meta['machine']}, torch {meta['torch']}, "
             f"{meta['threads']} threads, {meta['n']} facts from known_1000.json (the ten the integration "
             "tests use), the SmolLM2 presets (docs/presets.md). A step's seconds are the time between two "
             "successive optimization steps (taken by a step callback), so they include the loss, the "
             "backward pass and the optimizer update. The bare pass is one forward+backward of the same "
             "rewriting batch from the first block a step runs (the edit layer; MEMIT's last edit layer; TOP's "
             "la) to the logits, without hooks, timed in the same run. "
             "MEMIT is timed here one request at a time, like the others.", "",
             "| backend | method | s/edit (median) | vs ROME | steps (median) | s/step | bare fwd+bwd (s) "
             "| step / bare | TOP stage-2 s/step | success |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = next((x["median_seconds_per_edit"] for x in results
                     if x["backend"] == r["backend"] and x["method"] == "rome"), None)
        vs = f"{r['median_seconds_per_edit'] / base:.2f}x" if base else "-"
        s2 = r.get("median_seconds_per_stage2_step")
        lines.append(f"| {r['backend']} | {r['method']} | {r['median_seconds_per_edit']:.1f} | {vs} | "
                     f"{r['median_steps']:.0f} | {r['median_seconds_per_step']:.2f} | {r['bare_pass_seconds']:.2f} | "
                     f"{r['step_to_bare_ratio']:.2f} | {'-' if s2 is None else f'{s2:.3f}'} | "
                     f"{r['successes']}/{r['n']} |")
    lines += ["", "For TOP the s/step column is stage 1 (the rewriting batch from la to the logits); stage "
              "2 runs one prompt and has its own column. Targets: TOP per edit ≤ 1.0× ROME; s/step ≤ 1.3× "
              "the bare pass."]
    lines += ["", f"Peak RSS: {meta['peak_rss_mb']:.0f} MB. Whole run: {meta['seconds']:.0f} s.", ""]
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(lines))
    (ROOT / "docs" / "benchmarks.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="rome,top,rets,memit")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--backends", default="hooked")
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

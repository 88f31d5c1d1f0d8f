"""Edit latency on the bundled model, the reference path against the fast path in one run on the
same facts: seconds per edit, the speed-up, optimization steps, success (P(new) > P(true)),
top-1 success (o*'s first token is the top next token), mean P(o*); the seconds per step against
one bare forward+backward pass over the same layers; the peak RSS of ``toplens edit`` on each
backend. Writes docs/benchmarks.md (tables) and docs/benchmarks.json.

    python bench/edit_latency.py [--methods rome,top,rets,memit] [--n 10] [--backends hooked]
                                 [--paths reference,fast,short] [--lever-methods rome]
                                 [--rss-backends hooked,bridge]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from toplens.analyses.evaluation.samples import known_fact_requests
from toplens import apply_edit, as_adapter, hook_name, load_model
from toplens.editors import get_editor
from toplens.core.objective import rewrite_batch
from toplens.core.precision import native_bfloat16
from toplens.editors.presets import FAST_CONTEXT, fast_path, get_preset, reference_path, short_levers_text, short_path
from toplens.core.scoring import target_probability
from toplens.core.templates import context_templates

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "smollm2-135m-reference"  # the SmolLM2 presets' values on the reference path
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


def outcome(adapter, req) -> dict:
    """P(o*), P(o), and whether o*'s first token is the top next token, on the model as it is."""
    p_new = target_probability(adapter, req.text, req.target_new)
    p_true = target_probability(adapter, req.text, req.target_true)
    first = adapter.tokenizer(req.target_new, add_special_tokens=False).input_ids[0]
    top1 = int(adapter.next_token_probs(req.text).argmax()) == first
    return {"p_new": p_new, "p_true": p_true, "success": bool(p_new > p_true), "top1": bool(top1)}


def edit_once(adapter, editor, req, hp) -> dict:
    """One timed edit: seconds, steps, per-step seconds of its first and second stage, outcome."""
    clock = StepClock()
    t0 = time.perf_counter()
    edit = editor.compute(adapter, req, hp, observe=clock)
    seconds = time.perf_counter() - t0
    with apply_edit(adapter.model, edit):
        result = outcome(adapter, req)
    return {"subject": req.subject, "seconds": seconds, "steps": sum(len(t) for t in clock.stages),
            "stage_steps": [len(t) for t in clock.stages], "step_seconds_1": clock.seconds_per_step(0),
            "step_seconds_2": clock.seconds_per_step(1), **result}


PATHS = {
    "reference": reference_path,
    "fast": fast_path,
    "short": short_path,  # the fast path with a doubled step and a looser fit stop (ROME's default)
    # each lever of the fast path alone, on the reference path
    "bf16": lambda hp: reference_path(hp).replace(precision="bfloat16"),
    "fit": lambda hp: reference_path(hp).replace(stop_rule="fit"),
    "rows": lambda hp: reference_path(hp).replace(context_lengths=FAST_CONTEXT),
}


def reference_preset(method: str, n_layers: int):
    """The preset the recorded runs timed, on the reference path: the SmolLM2 preset's values
    (TOP: the layer-5 preset, "smollm2-135m-l5", with the reference path's rows)."""
    if method != "top":
        return get_preset(method, REFERENCE, n_layers)
    rows = get_preset("rome", REFERENCE).context_lengths
    return reference_path(get_preset("top", "smollm2-135m-l5", n_layers)).replace(context_lengths=rows)


def run_method(adapter, method: str, requests, path: str = "reference") -> dict:
    editor = get_editor(method)
    hp = PATHS[path](reference_preset(method, adapter.n_layers))
    rows = [edit_once(adapter, editor, req, hp) for req in requests]
    bare = bare_pass_seconds(adapter, editor, requests[0], hp)
    stage1 = [x for r in rows for x in r["step_seconds_1"]]
    stage2 = [x for r in rows for x in r["step_seconds_2"]] if method == "top" else []
    per_step = statistics.median(stage1)
    return {"method": method, "path": path, "backend": adapter.backend, "hparams": hp.to_dict(), "edits": rows,
            "median_seconds_per_edit": statistics.median(r["seconds"] for r in rows),
            "median_steps": statistics.median(r["steps"] for r in rows),
            "median_seconds_per_step": per_step, "bare_pass_seconds": bare,
            "step_to_bare_ratio": per_step / bare,
            "median_seconds_per_stage2_step": statistics.median(stage2) if stage2 else None,
            "successes": sum(r["success"] for r in rows), "top1": sum(r["top1"] for r in rows),
            "mean_p_new": statistics.mean(r["p_new"] for r in rows), "n": len(rows)}


_EDIT = ("import sys; from toplens.analyses.cli import main; sys.exit(main(['edit', '--backend', sys.argv[1], "
         "'--prompt', 'The mother tongue of {} is', '--subject', 'Danielle Darrieux', '--target', ' English', "
         "'--target-true', ' French']))")
_PEAK = ("import resource, subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1], sys.argv[2]], "
         "check=True, capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def edit_command_rss_mb(backend: str) -> float:
    """The peak RSS of one ``toplens edit`` (the README's demo request) on ``backend``, in MB,
    measured in a process of its own (the resource usage of its only child)."""
    out = subprocess.run([sys.executable, "-c", _PEAK, _EDIT, backend], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def path_table(results: list[dict]) -> list[str]:
    """One row per (backend, method): the reference path against the fast path of the same run."""
    lines = ["| backend | method | path | s/edit (median) | speed-up | steps (median) | success | top-1 success "
             "| mean P(o*) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ref = next((x for x in results if (x["backend"], x["method"], x["path"]) ==
                    (r["backend"], r["method"], "reference")), None)
        speed = f"{ref['median_seconds_per_edit'] / r['median_seconds_per_edit']:.2f}x" if ref else "-"
        lines.append(f"| {r['backend']} | {r['method']} | {r['path']} | {r['median_seconds_per_edit']:.1f} | {speed} "
                     f"| {r['median_steps']:.0f} | {r['successes']}/{r['n']} | {r['top1']}/{r['n']} "
                     f"| {r['mean_p_new']:.3f} |")
    return lines


def step_table(results: list[dict]) -> list[str]:
    """One row per (backend, method, path): the seconds per step against the bare pass."""
    lines = ["| backend | method | path | s/step | bare fwd+bwd (s) | step / bare | TOP stage-2 s/step |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        s2 = r.get("median_seconds_per_stage2_step")
        lines.append(f"| {r['backend']} | {r['method']} | {r['path']} | {r['median_seconds_per_step']:.2f} "
                     f"| {r['bare_pass_seconds']:.2f} | {r['step_to_bare_ratio']:.2f} "
                     f"| {'-' if s2 is None else f'{s2:.3f}'} |")
    return lines


def with_section(text: str, section: str) -> str:
    """``text`` with its section headed like ``section`` (up to the next top-level heading) replaced
    by ``section``, or ``section`` put first where it has none: the other benches' sections stay."""
    head = section.splitlines()[0] + "\n"
    if not text.startswith(head) and ("\n" + head) not in text:
        return section.rstrip("\n") + "\n\n" + text if text else section
    start = 0 if text.startswith(head) else text.index("\n" + head) + 1
    after = text.find("\n# ", start + len(head))
    return text[:start] + section.rstrip("\n") + "\n" + (text[after:] if after >= 0 else "")


def write_docs(results: list[dict], meta: dict) -> None:
    """Write the tables of this run (docs/benchmarks.md) and its JSON."""
    lines = ["# Edit latency on the bundled model", "", _method_note(results, meta), ""]
    lines += path_table(results)
    lines += ["", "A step's seconds are the time between two successive optimization steps (taken by a step "
              "callback): the loss, the backward pass and the optimizer update. The bare pass is one "
              "forward+backward of the same rewriting batch from the first block a step runs (the edit layer; "
              "MEMIT's last edit layer; TOP's la) to the logits, in float32 without hooks. For TOP the s/step "
              "column is stage 1; stage 2 runs one prompt and has its own column.", ""]
    lines += step_table(results)
    rss = "; ".join(f"{b}: {mb:.0f} MB" for b, mb in meta["edit_rss_mb"].items()) or "not measured"
    lines += ["", f"Peak RSS of one `toplens edit` (the demo request, its own process): {rss}. "
              f"Peak RSS of this benchmark: {meta['peak_rss_mb']:.0f} MB. Whole run: {meta['seconds']:.0f} s.", ""]
    doc = ROOT / "docs" / "benchmarks.md"
    doc.write_text(with_section(doc.read_text() if doc.exists() else "", "\n".join(lines)))
    (ROOT / "docs" / "benchmarks.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))


def _method_note(results: list[dict], meta: dict) -> str:
    """How the run was made: machine, threads, facts, and each path that it timed."""
    paths = {r["path"] for r in results}
    short = (" and on the short path (the fast path with Adam's learning rate at 1.0 and a looser fit stop: "
             f"{short_levers_text()}; ROME's default)") if "short" in paths else ""
    levers = ("; the paths bf16, fit and rows are each lever of the fast path alone on the reference path. "
              if paths & {"bf16", "fit", "rows"} else ". ")
    return (f"Measured by `python bench/edit_latency.py` on {meta['machine']} (CPU), torch {meta['torch']}, "
            f"{meta['threads']} thread(s), {meta['n']} facts from known_1000.json (the ten the integration "
            "tests use), the SmolLM2 presets (docs/presets.md), each method on the reference path (float32, "
            "the early stop on the whole loss, as published, 11 rewriting rows) and on the fast path (the "
            f"optimization's forward passes in {meta['auto_precision']} (precision='auto': bfloat16 autocast only where "
            "the CPU has native bfloat16), the early stop on the fit of the targets, "
            f"3 rewriting rows: context lengths {list(FAST_CONTEXT)}){short} in the same run, on the same facts"
            f"{levers}Success: P(o*) > P(o) after the edit; top-1 success: o*'s first token is the top next "
            f"token. MEMIT is timed one request at a time, like the others. {meta['gpu_note']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="rome,top,rets,memit")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--backends", default="hooked")
    parser.add_argument("--paths", default="reference,fast,short")
    parser.add_argument("--lever-methods", default="", help="methods also timed with each fast-path lever alone "
                        "(paths bf16, fit, rows)")
    parser.add_argument("--rss-backends", default="hooked,bridge", help="backends of the `toplens edit` RSS run")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rss = {b: edit_command_rss_mb(b) for b in args.rss_backends.split(",") if b}  # first: a failure costs little
    requests = known_fact_requests(KNOWN, args.n)
    results = []
    for backend in args.backends.split(","):
        adapter = as_adapter(load_model(backend=backend))
        for lengths in (get_preset("rome", REFERENCE).context_lengths, FAST_CONTEXT):  # drawn outside the timings
            context_templates(adapter, lengths)
        levers = set(filter(None, args.lever_methods.split(",")))
        results += [run_method(adapter, m, requests, path) for m in args.methods.split(",")
                    for path in args.paths.split(",") + (["bf16", "fit", "rows"] if m in levers else [])]
    meta = {"auto_precision": "bfloat16" if native_bfloat16(torch.device("cpu")) else "float32",
            "machine": platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "n": len(requests), "seconds": time.perf_counter() - t0, "edit_rss_mb": rss,
            "gpu_note": "GPU: none in this run; every figure is the CPU's."
            if not torch.cuda.is_available() else f"GPU present ({torch.cuda.get_device_name()}) but not used.",
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    write_docs(results, meta)
    print((ROOT / "docs" / "benchmarks.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

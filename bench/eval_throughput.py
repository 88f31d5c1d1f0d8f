"""Throughput of ``toplens eval``: the records measured one at a time (``--batch-size 1``) against
measured together under per-row edits (``--batch-size N``), in the same process on the same cases,
and how far the two agree prompt by prompt.

    python bench/eval_throughput.py [--n 40] [--batch-sizes 8,16] [--methods rome,top] [--no-generation]
        [--out-dir bench/out/eval_throughput] [--doc docs/eval_throughput.md]

Both paths run each method's SmolLM2 preset on the fast path (TOP: the layer-5 one, "smollm2-135m-l5", which the recorded runs used). Agreement: per prompt of every
metric, the largest NLL difference between the paths, the prompts whose outcome differs (an
outcome may differ only where its two NLLs lie within float order of each other), and the
generated texts that differ.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from toplens import load_model
from toplens.analyses.evaluation.datasets import load_dataset
from toplens.analyses.evaluation.results import METRICS
from toplens.analyses.evaluation.runner import CASES_FILE, EvalResult, read_cases, run_eval
from toplens.editors.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]


def agreement(a: EvalResult, b: EvalResult) -> dict:
    """Per method: prompts compared, the largest NLL difference, and the prompts whose outcome differs."""
    out = {}
    for method, cases in a.cases.items():
        diffs, flips, n = [0.0], 0, 0
        for x, y in zip(cases, b.cases[method], strict=True):
            for name in (*METRICS, "efficacy_at_1"):
                for p, q in zip(getattr(x, name).outcomes, getattr(y, name).outcomes, strict=True):
                    n += 1
                    diffs += [abs(p.nll_wanted - q.nll_wanted), abs(p.nll_rival - q.nll_rival)]
                    flips += p.success != q.success
        out[method] = {"prompts": n, "max_nll_difference": max(diffs), "outcomes_differing": flips}
    return out


def texts_differing(a: Path, b: Path) -> tuple[int, int]:
    """Generated texts compared between two run folders' cases.jsonl: (texts, texts that differ)."""
    read = lambda d: {(x["case_id"], x["method"]): x["generations"] for x in read_cases(d / CASES_FILE)}  # noqa: E731
    x, y = read(a), read(b)
    pairs = [(p, q) for key in x for p, q in zip(x[key], y[key], strict=True)]
    return len(pairs), sum(p != q for p, q in pairs)


def timed(model, records, methods, out: Path, batch_size: int, tokens: int) -> tuple[EvalResult, float]:
    """One fresh run_eval (its folder emptied first) and its wall seconds."""
    shutil.rmtree(out, ignore_errors=True)
    hparams = {m: get_preset(m, "smollm2-135m-l5" if m == "top" else "smollm2-135m-fast")  # the recorded presets
               for m in methods}
    start = time.perf_counter()
    result = run_eval(model, records, methods, out, hparams=hparams, generation_tokens=tokens, batch_size=batch_size)
    return result, time.perf_counter() - start


def markdown(rows: list[dict], n: int, tokens: int) -> str:
    lines = ["# Evaluation throughput", "",
             f"Written by `python bench/eval_throughput.py`: `run_eval` of the same {n} built-in cases, one path after "
             f"the other in one process, fast-path presets, {tokens} generation tokens per prompt.", "",
             "| path | seconds | cases per minute | ratio |", "|---|---|---|---|"]
    base = rows[0]["seconds"]
    lines += [f"| batch size {r['batch_size']} | {r['seconds']:.0f} | {60 * n / r['seconds']:.2f} | "
              f"{base / r['seconds']:.2f}× |" for r in rows]
    lines += ["", "Each batched path against batch size 1, prompt by prompt:", "",
              "| path | method | prompts compared | largest NLL difference | outcomes differing | texts differing |",
              "|---|---|---|---|---|---|"]
    lines += [f"| batch size {r['batch_size']} | {m} | {a['prompts']} | {a['max_nll_difference']:.1e} | "
              f"{a['outcomes_differing']} | {r['texts'][1]} of {r['texts'][0]} |"
              for r in rows[1:] for m, a in r["agreement"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--batch-sizes", default="8,16", help="the batched paths, each against batch size 1")
    parser.add_argument("--methods", default="rome,top")
    parser.add_argument("--no-generation", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out" / "eval_throughput")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "eval_throughput.md")
    args = parser.parse_args(argv)
    sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if args.n < 1 or not sizes or min(sizes) < 2:
        raise SystemExit(f"--n must be at least 1 and every --batch-sizes entry at least 2; got {args.n} and "
                         f"{args.batch_sizes!r}")
    tokens = 0 if args.no_generation else 30
    model, records, methods = load_model(), load_dataset("builtin", limit=args.n), args.methods.split(",")
    serial, seconds = timed(model, records, methods, args.out_dir / "serial", 1, tokens)
    rows = [{"batch_size": 1, "seconds": seconds}]
    for size in sizes:
        batched, seconds = timed(model, records, methods, args.out_dir / f"batch{size}", size, tokens)
        rows.append({"batch_size": size, "seconds": seconds, "agreement": agreement(batched, serial),
                     "texts": texts_differing(args.out_dir / "serial", args.out_dir / f"batch{size}")})
        text = markdown(rows, args.n, tokens)
        args.doc.write_text(text)
        args.doc.with_suffix(".json").write_text(json.dumps({"rows": rows, "n": args.n, "tokens": tokens},
                                                            indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

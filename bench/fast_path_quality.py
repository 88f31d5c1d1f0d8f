"""Quality of the fast path against the reference path on built-in COUNTERFACT_RS cases: the same
``toplens eval`` run twice on the same cases (no generations), once with the reference path's
settings (``get_preset(method, "smollm2-135m-reference")``: float32, the stop on the whole loss, 11
rewriting rows) and once with the fast path's (:func:`toplens.editors.presets.fast_path`, the presets'
default).
Reports every rate per method and path, and the fast − reference difference with a paired
bootstrap 95% interval over cases. Writes docs/fast_path_quality.md and .json.

    python bench/fast_path_quality.py [--methods rome,top] [--n 40] [--out-dir bench/out/fast_path_quality]

Each eval resumes from its folder under ``--out-dir``, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from toplens.analyses.evaluation.intervals import paired_bootstrap, table_values
from toplens.analyses.evaluation.results import METRIC_ABBREVIATIONS, METRICS
from toplens.editors.presets import changed_fields, fast_path, get_preset
from toplens.editors.rome import RomeHparams

ROOT = Path(__file__).resolve().parents[1]
_LEVERS = fast_path(RomeHparams())
FAST = {"precision": _LEVERS.precision, "stop_rule": _LEVERS.stop_rule,
        "context_lengths": [list(x) for x in _LEVERS.context_lengths]}
_REF = get_preset("rome", "smollm2-135m-reference")
REFERENCE = {"precision": _REF.precision, "stop_rule": _REF.stop_rule,
             "context_lengths": [list(x) for x in _REF.context_lengths]}
COLUMNS = (*METRICS, "score")


def base_settings(method: str) -> dict:
    """TOP's recorded runs used the layer-5 preset ("smollm2-135m-l5"): its values over today's."""
    return changed_fields("top", "smollm2-135m-l5") if method == "top" else {}


def run_eval(methods: list[str], n: int, out: Path, fast: bool) -> None:
    """``toplens eval`` on the first ``n`` built-in cases, resuming from ``out``."""
    cmd = [sys.executable, "-c", "import sys; from toplens.analyses.cli import main; sys.exit(main(sys.argv[1:]))", "eval", "--methods", ",".join(methods), "--data", "builtin",
           "--limit", str(n), "--no-generation", "--out", str(out), "--json"]
    cmd += ["--hparams", json.dumps({m: {**base_settings(m), **(FAST if fast else REFERENCE)} for m in methods})]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def case_rates(out: Path, method: str) -> dict:
    """case_id -> (the four post-edit rates, seconds) of ``method`` in ``out``/cases.jsonl."""
    rows = {}
    for line in (out / "cases.jsonl").read_text().splitlines():
        case = json.loads(line)
        if case["method"] == method:
            rates = [case["post"][m]["rate"] for m in METRICS]  # None where a metric is undefined
            rows[case["case_id"]] = ([np.nan if r is None else r for r in rates], case["seconds"])
    return rows


def compare(out_dir: Path, n: int, method: str) -> dict:
    ref, fast = case_rates(out_dir / f"ref{n}", method), case_rates(out_dir / f"fast{n}", method)
    ids = sorted(set(ref) & set(fast), key=str)
    r = np.array([ref[i][0] for i in ids], dtype=float)
    f = np.array([fast[i][0] for i in ids], dtype=float)
    diff = paired_bootstrap(r, f)
    low, high = diff.low, diff.high
    seconds = {p: float(np.median([rows[i][1] for i in ids])) for p, rows in (("reference", ref), ("fast", fast))}
    every = {p: table_values(np.array([v[0] for v in rows.values()], dtype=float)).tolist() for p, rows in
             (("reference", ref), ("fast", fast))}
    return {"method": method, "n": len(ids), "reference": table_values(r).tolist(), "fast": table_values(f).tolist(),
            "all_cases": every, "n_all": {"reference": len(ref), "fast": len(fast)},
            "diff_low": low.tolist(), "diff_high": high.tolist(), "median_seconds_per_case": seconds}


def markdown(results: list[dict], n: int) -> str:
    head = ["method", "path", "n", *(METRIC_ABBREVIATIONS.get(c, "Score") for c in COLUMNS), "s/case (median)"]
    lines = [f"# Fast path against reference path: quality on {n} built-in cases", "",
             "Written by `python bench/fast_path_quality.py`: `toplens eval --data builtin --limit "
             f"{n} --no-generation` with `--hparams` {json.dumps(REFERENCE)} (the reference path) and with "
             f"{json.dumps(FAST)} (the fast path), over each method's SmolLM2 preset (TOP: the layer-5 one), "
             "the same cases. Rates in %; the last row of each method is fast − reference "
             "with a paired bootstrap 95% interval over cases (2000 draws). s/case is the whole case "
             "(edit and measurement), wall time, and says nothing about what else ran on the machine.", "",
             *[f"**Incomplete:** only {r['n']} of the {n} cases have both paths for {r['method']} (one eval holds "
               "fewer cases); the comparison below stands on those and is too small to accept or reject the fast path."
               for r in results if r["n"] < n], "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for path in ("reference", "fast"):
            cells = [f"{v:.1f}" for v in r[path]]
            lines.append(f"| {r['method']} | {path} | {r['n']} | " + " | ".join(cells)
                         + f" | {r['median_seconds_per_case'][path]:.1f} |")
        diff = [f"{f - q:+.1f} [{lo:+.1f}, {hi:+.1f}]" for f, q, lo, hi in
                zip(r["fast"], r["reference"], r["diff_low"], r["diff_high"])]
        lines.append(f"| {r['method']} | fast − ref | {r['n']} | " + " | ".join(diff) + " | |")
    lines += ["", "Each path on every case its folder holds (where one eval finished more cases than the other):", "",
              "| method | path | n | " + " | ".join(head[3:-1]) + " |", "|" + "---|" * (len(head) - 1)]
    for r in results:
        for path in ("reference", "fast"):
            cells = " | ".join(f"{v:.1f}" for v in r["all_cases"][path])
            lines.append(f"| {r['method']} | {path} | {r['n_all'][path]} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="rome,top")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out" / "fast_path_quality")
    parser.add_argument("--skip-eval", action="store_true", help="only tabulate what the folders hold")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    if not args.skip_eval:
        for fast in (True, False):
            run_eval(methods, args.n, args.out_dir / f"{'fast' if fast else 'ref'}{args.n}", fast)
    results = [compare(args.out_dir, args.n, m) for m in methods]
    (ROOT / "docs" / "fast_path_quality.md").write_text(markdown(results, args.n))
    (ROOT / "docs" / "fast_path_quality.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Quality of the fast paths against the reference path on built-in COUNTERFACT_RS cases: the same
``toplens eval`` run once per path on the same cases (no generations), with every value of the
SmolLM2 preset given: the reference path (``get_preset(method, "smollm2-135m-reference")``: float32,
the stop on the whole loss, 11 rewriting rows), the fast path (:func:`toplens.editors.presets.fast_path`)
and the short path (:func:`toplens.editors.presets.short_path`, ROME's default).
Reports every rate per method and path, and each path − reference difference with a paired
bootstrap 95% interval over cases. Writes docs/fast_path_quality.md and .json.

    python bench/fast_path_quality.py [--methods rome,top] [--n 40] [--paths reference,fast,short]
                                      [--out-dir bench/out/fast_path_quality]

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
from toplens.core.hparams import Hparams
from toplens.editors.presets import fast_path, get_preset, reference_path, short_levers_text, short_path
from toplens.editors.rome import RomeHparams

ROOT = Path(__file__).resolve().parents[1]
_LEVERS = fast_path(RomeHparams())
FAST = {"precision": _LEVERS.precision, "stop_rule": _LEVERS.stop_rule,
        "context_lengths": [list(x) for x in _LEVERS.context_lengths]}
_REF = get_preset("rome", "smollm2-135m-reference")
REFERENCE = {"precision": _REF.precision, "stop_rule": _REF.stop_rule,
             "context_lengths": [list(x) for x in _REF.context_lengths]}
PATHS = {"reference": reference_path, "fast": fast_path, "short": short_path}
FOLDERS = {"reference": "ref", "fast": "fast", "short": "short"}
COLUMNS = (*METRICS, "score")


def reference_preset(method: str) -> Hparams:
    """The SmolLM2 preset on the reference path (TOP: the layer-5 one, "smollm2-135m-l5", which the
    recorded runs used), with every value spelled out, so that a later preset does not change it."""
    if method != "top":
        return get_preset(method, "smollm2-135m-reference")
    return reference_path(get_preset("top", "smollm2-135m-l5")).replace(context_lengths=_REF.context_lengths)


def path_settings(method: str, path: str) -> dict:
    """The whole hyperparameters of ``method`` on ``path`` (reference, fast or short), as JSON."""
    return json.loads(PATHS[path](reference_preset(method)).to_json())


def run_eval(methods: list[str], n: int, out: Path, path: str) -> None:
    """``toplens eval`` on the first ``n`` built-in cases, resuming from ``out``."""
    cmd = [sys.executable, "-c", "import sys; from toplens.analyses.cli import main; sys.exit(main(sys.argv[1:]))", "eval", "--methods", ",".join(methods), "--data", "builtin",
           "--limit", str(n), "--no-generation", "--out", str(out), "--json"]
    cmd += ["--hparams", json.dumps({m: path_settings(m, path) for m in methods})]
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


def compare(out_dir: Path, n: int, method: str, paths: tuple[str, ...] = ("fast", "short")) -> dict:
    """Every path's rates on the cases that all of them hold, and each one − reference (paired)."""
    rows = {p: case_rates(out_dir / f"{FOLDERS[p]}{n}", method) for p in ("reference", *paths)
            if (out_dir / f"{FOLDERS[p]}{n}" / "cases.jsonl").exists()}
    rows = {p: r for p, r in rows.items() if r}  # a folder without this method's cases drops out
    if "reference" not in rows:
        raise SystemExit(f"{out_dir / f'ref{n}'} holds no {method} cases: run the reference path first")
    ids = sorted(set.intersection(*(set(r) for r in rows.values())), key=str)
    rates = {p: np.array([r[i][0] for i in ids], dtype=float) for p, r in rows.items()}
    diffs = {p: paired_bootstrap(rates["reference"], rates[p]) for p in rows if p != "reference"}
    return {"method": method, "n": len(ids), "paths": list(rows),
            **{p: table_values(v).tolist() for p, v in rates.items()},
            "diff_low": {p: d.low.tolist() for p, d in diffs.items()},
            "diff_high": {p: d.high.tolist() for p, d in diffs.items()},
            "all_cases": {p: table_values(np.array([v[0] for v in r.values()], dtype=float)).tolist()
                          for p, r in rows.items()},
            "n_all": {p: len(r) for p, r in rows.items()},
            "median_seconds_per_case": {p: float(np.median([r[i][1] for i in ids])) for p, r in rows.items()}}


def markdown(results: list[dict], n: int) -> str:
    """docs/fast_path_quality.md: how the runs were made, every path's rates with the paired
    differences on the cases all paths hold, then each path on every case its folder holds."""
    head = ["method", "path", "n", *(METRIC_ABBREVIATIONS.get(c, "Score") for c in COLUMNS), "s/case (median)"]
    lines = [*_preamble(results, n), "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [row for r in results for row in _paired_rows(r)]
    lines += ["", "Each path on every case its folder holds (where one eval finished more cases than another):", "",
              "| method | path | n | " + " | ".join(head[3:-1]) + " |", "|" + "---|" * (len(head) - 1)]
    for r in results:
        for path in r["paths"]:
            cells = " | ".join(f"{v:.1f}" for v in r["all_cases"][path])
            lines.append(f"| {r['method']} | {path} | {r['n_all'][path]} | {cells} |")
    return "\n".join(lines) + "\n"


def _preamble(results: list[dict], n: int) -> list[str]:
    """The title, how the runs were made, and a warning for each method with cases missing."""
    return [f"# Fast and short paths against the reference path: quality on {n} built-in cases", "",
            "Written by `python bench/fast_path_quality.py`: `toplens eval --data builtin --limit "
            f"{n} --no-generation` on each method's SmolLM2 preset (TOP: the layer-5 one) with every value "
            "given by `--hparams`: on the reference path (float32, the stop on the whole loss, 11 rewriting "
            f"rows: {json.dumps(REFERENCE)}), on the fast path ({json.dumps(FAST)}), and on the short path "
            f"(the fast path with Adam's learning rate at 1.0 and a looser fit stop: {short_levers_text()}), the "
            "same cases. Rates in %; the rows \"path − ref\" are the paired difference with a bootstrap 95% "
            "interval over cases (2000 draws). s/case is the whole case (edit and measurement), wall time, "
            "and says nothing about what else ran on the machine.", "",
            *[line for r in results if r["n"] < n for line in (
                f"**Incomplete:** only {r['n']} of the {n} cases have every path for {r['method']} (one eval holds "
                "fewer cases); the comparison below stands on those and is too small to accept or reject a path.", "")]]


def _paired_rows(r: dict) -> list[str]:
    """One method's rows: each path's rates, then each path − reference with its paired interval."""
    rows = [f"| {r['method']} | {path} | {r['n']} | " + " | ".join(f"{v:.1f}" for v in r[path])
            + f" | {r['median_seconds_per_case'][path]:.1f} |" for path in r["paths"]]
    for path in r["paths"][1:]:
        diff = [f"{f - q:+.1f} [{lo:+.1f}, {hi:+.1f}]" for f, q, lo, hi in
                zip(r[path], r["reference"], r["diff_low"][path], r["diff_high"][path])]
        rows.append(f"| {r['method']} | {path} − ref | {r['n']} | " + " | ".join(diff) + " | |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="rome,top")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out" / "fast_path_quality")
    parser.add_argument("--paths", default="reference,fast,short")
    parser.add_argument("--skip-eval", action="store_true", help="only tabulate what the folders hold")
    args = parser.parse_args(argv)
    methods, paths = args.methods.split(","), args.paths.split(",")
    if unknown := [p for p in paths if p not in PATHS]:
        raise SystemExit(f"--paths: unknown {unknown} (known: {list(PATHS)})")
    if not args.skip_eval:
        for path in paths:
            run_eval(methods, args.n, args.out_dir / f"{FOLDERS[path]}{args.n}", path)
    results = [compare(args.out_dir, args.n, m, tuple(p for p in paths if p != "reference")) for m in methods]
    (ROOT / "docs" / "fast_path_quality.md").write_text(markdown(results, args.n))
    (ROOT / "docs" / "fast_path_quality.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())

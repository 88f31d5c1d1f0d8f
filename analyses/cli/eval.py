"""`toplens eval`: COUNTERFACT_RS metrics of editing methods on built-in or user data."""

from __future__ import annotations

import argparse
from typing import Any, Mapping

from toplens.analyses.cli.common import (add_data_arg, add_hparams_arg, add_methods_arg, add_model_args, add_out_arg,
                                         check_at_least, check_file, check_hparams_flag, check_writable, emit,
                                         hparams_overrides, load, parse_methods, records_from, resolve_all)
from toplens.analyses.evaluation.evaluate import GENERATION_TOKENS, GENERATION_TOP_K
from toplens.analyses.evaluation.metrics import load_stop_words
from toplens.analyses.evaluation.results import METRIC_ABBREVIATIONS, METRICS
from toplens.analyses.evaluation.runner import run_eval
from toplens.analyses.evaluation.shards import Shard, claim_folder

# the four rates with Efficacy@1 beside Efficacy (not in the Score), then the Score, Fluency, Consistency
COLUMNS = {**METRIC_ABBREVIATIONS, "score": "Score", "fluency": "Flu", "consistency": "Cons"}


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="COUNTERFACT_RS metrics of editing methods over a dataset")
    add_methods_arg(p, "rome")
    add_data_arg(p)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N records only")
    add_out_arg(p, "cases.jsonl, summary.json; reruns resume", required=True)
    p.add_argument("--stopwords", default=None, help="stop-word file, one per line (default: a built-in list)")
    p.add_argument("--no-generation", action="store_true", help="skip generations (no Fluency / Consistency)")
    p.add_argument("--generation-tokens", type=int, default=GENERATION_TOKENS, help="new tokens per generation")
    p.add_argument("--top-k", type=int, default=GENERATION_TOP_K, help="sampling top-k (1 = greedy)")
    p.add_argument("--seed", type=int, default=0, help="seed for target_new of known facts and for sampling")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="evaluate only shard K of N (records K-1, K-1+N, ...) into --out; join them with toplens merge")
    p.add_argument("--batch-size", type=int, default=16,
                   help="records measured and sampled together, each under its own edit as per-row hooks "
                        "(1: one at a time; 16, the default, was the faster size in docs/benchmarks.md)")
    p.add_argument("--strict", action="store_true", help="stop at a record that cannot be evaluated "
                                                         "(default: skip it, listed in summary.json)")
    add_hparams_arg(p)
    add_model_args(p)
    p.set_defaults(run=run)


def validate(args: argparse.Namespace) -> None:
    """The flags and files, before the data or the model loads."""
    check_at_least(args, 1, "limit", "top_k", "batch_size")
    check_at_least(args, 0, "generation_tokens", "seed")
    check_writable(args.out, "--out", folder=True)
    check_file(args.stopwords, "--stopwords")
    check_hparams_flag(args.hparams, parse_methods(args.methods))
    if args.shard is not None:
        Shard.parse(args.shard)


def run(args: argparse.Namespace) -> int:
    validate(args)
    methods = parse_methods(args.methods)
    records = records_from(args, args.limit)
    if not records:
        raise ValueError(f"--data {args.data!r} has no records")
    if args.shard is not None:
        shard = Shard.parse(args.shard)
        claim_folder(args.out, shard, len(records))
        records = shard.select(records)
        if not records:
            raise ValueError(f"--shard {args.shard}: the shard has no records ({len(records)} in --data)")
    overrides = hparams_overrides(args.hparams, methods)
    stop_words = load_stop_words(args.stopwords)
    model = load(args)
    hparams = resolve_all(model, overrides, args.model)
    result = run_eval(model, records, methods, args.out, hparams=hparams, model_name=args.model or None,
                      stop_words=stop_words, generation_tokens=0 if args.no_generation else args.generation_tokens,
                      top_k=args.top_k, seed=args.seed, strict=args.strict, batch_size=args.batch_size)
    emit(args, result.to_json(), format_summary(result.to_json()))
    return 0


def format_summary(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """A table: one row per method, rates (and Efficacy@1) in percent with a row of their bootstrap
    95% intervals over cases beneath, then the magnitudes and the pre-edit rates."""
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}"

    def bounds(pair: Any) -> str:
        return "-" if pair is None else f"{pair[0]:.0f}-{pair[1]:.0f}"

    rows = [f"{'method':10}{'n':>5}" + "".join(f"{c:>9}" for c in COLUMNS.values())]
    for method, s in summary.items():
        rows.append(f"{method:10}{s['n']:>5}" + "".join(f"{cell(s[k]):>9}" for k in COLUMNS))
        if s.get("intervals"):
            ci = s["intervals"]
            rows.append(f"{'  95% CI':15}" + "".join(f"{bounds(ci.get(k)):>9}" for k in COLUMNS))
    rows += ["", "magnitudes (mean P(wanted) - P(rival), x100); before the edit (rates):"]
    for method, s in summary.items():
        mags = "  ".join(f"{COLUMNS[k]} {cell(s[f'{k}_magnitude'])}" for k in METRICS)
        pre = "  ".join(f"{COLUMNS[k]} {cell(s['pre'].get(k))}" for k in METRIC_ABBREVIATIONS)
        rows.append(f"{method:10}{mags}   | pre: {pre}   | {cell(s['seconds_per_edit'])} s/edit")
    skipped = [(method, item) for method, s in summary.items() for item in s.get("skipped", ())]
    if skipped:
        rows += ["", f"skipped ({len(skipped)}; not in the rates above):"]
        rows += [f"{method:10}case {item['case_id']!r} (record {item['index']}): {item['reason']}"
                 for method, item in skipped]
    return "\n".join(rows)
